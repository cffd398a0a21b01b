"""The Dockerfile's build context installs the package (no Docker engine here):
the files that .dockerignore lets through and the Dockerfile copies are enough
to build the wheel, and the wheel holds every module and the console script."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def ignore_rules() -> list[tuple[bool, str]]:
    """(excluded, pattern) per .dockerignore line, in order; the last match wins."""
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((not line.startswith("!"), line.lstrip("!").rstrip("/")))
    return rules


def excluded(relative: str, rules: list[tuple[bool, str]]) -> bool:
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for exclude, pattern in rules:
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatch(prefix, pattern) and prefix.count("/") == pattern.count("/")
                      for prefix in prefixes)
        if hit:
            verdict = exclude
    return verdict


def build_context() -> list[str]:
    files = [p.relative_to(REPO).as_posix() for p in REPO.rglob("*")
             if p.is_file() and ".venv" not in p.parts and ".git" not in p.parts]
    rules = ignore_rules()
    return sorted(f for f in files if not excluded(f, rules))


def copied_sources() -> list[str]:
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    sources = []
    for line in text.splitlines():
        if line.strip().upper().startswith("COPY"):
            parts = [p for p in line.split()[1:] if not p.startswith("--")]
            sources += parts[:-1]
    return sources


def test_build_context_is_small_and_has_the_package():
    context = build_context()
    assert "pyproject.toml" in context and "README.md" in context and "recsys_ray/cli.py" in context
    assert not [f for f in context if f.startswith(("tests/", "benchmarks/", "recsys-data/")) or "__pycache__" in f]


def test_the_copied_context_builds_a_complete_wheel(tmp_path):
    context = build_context()
    image_dir = tmp_path / "recsys-ray"
    for source in copied_sources():
        for relative in [f for f in context if f == source or f.startswith(source + "/")]:
            target = image_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / relative, target)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(wheels), str(image_dir)], check=True, timeout=300)
    (wheel,) = wheels.glob("recsys_ray-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "recsys_ray").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "recsys-ray = recsys_ray.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
