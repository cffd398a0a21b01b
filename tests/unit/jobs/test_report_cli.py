"""`recsys-ray report` fails with a message and an exit code, never a traceback, before starting Ray."""

from __future__ import annotations

import subprocess
import sys

from recsys_ray.build.manifest import write_manifest
from tests.unit.build.test_manifest import manifest


def run(*args):
    return subprocess.run([sys.executable, "-m", "recsys_ray.cli", "report", *args], capture_output=True, text=True,
                          timeout=120)


def test_missing_manifest(tmp_path):
    result = run("--manifest", str(tmp_path / "v1"))
    assert result.returncode == 1
    assert "error: no manifest at" in result.stderr and "Traceback" not in result.stderr


def test_missing_previous_and_broken_manifest(tmp_path):
    version = tmp_path / "v2"
    version.mkdir()
    write_manifest(manifest(), str(version))
    result = run("--manifest", str(version), "--previous", str(tmp_path / "v1"))
    assert result.returncode == 1 and "no manifest at" in result.stderr and "Traceback" not in result.stderr
    (version / "manifest.json").write_text("[1, 2")
    result = run("--manifest", str(version / "manifest.json"))
    assert result.returncode == 1 and "is not a recsys_ray manifest" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("report:\n  psi_bins: 1\n")
    result = run("--manifest", str(tmp_path), "--config", str(config))
    assert result.returncode == 2 and "invalid configuration" in result.stderr


def test_listed_in_help():
    result = subprocess.run([sys.executable, "-m", "recsys_ray.cli", "--help"], capture_output=True, text=True)
    assert "report" in result.stdout
