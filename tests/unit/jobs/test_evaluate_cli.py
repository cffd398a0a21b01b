"""`recsys-ray evaluate` fails with one line and an exit code, never a traceback, before starting Ray."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from recsys_ray.build.manifest import write_manifest
from recsys_ray.jobs.evaluate import format_metrics, parse_ks
from tests.unit.build.test_manifest import manifest


def run(*args):
    return subprocess.run([sys.executable, "-m", "recsys_ray.cli", "evaluate", *args], capture_output=True,
                          text=True, timeout=120)


def test_missing_manifest(tmp_path):
    result = run("--manifest", str(tmp_path / "v1"), "--model", "popularity")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: no manifest at {tmp_path / 'v1' / 'manifest.json'}: the version does not exist or never "
        "completed (the build writes manifest.json last)"]


def test_version_without_eval_set_or_broken_manifest(tmp_path):
    version = tmp_path / "v1"
    version.mkdir()
    write_manifest(manifest(), str(version))  # no eval set, no vocabularies
    result = run("--manifest", str(version), "--model", "random")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "no evaluation set" in result.stderr
    (version / "manifest.json").write_text("{}")
    result = run("--manifest", str(version / "manifest.json"), "--model", "random")
    assert result.returncode == 1 and "is not a recsys_ray manifest" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_arguments(tmp_path):
    result = run("--manifest", str(tmp_path), "--model", "popularity", "--k", "10,x")
    assert result.returncode == 2 and "--k takes comma-separated positive integers such as 10,20; got '10,x'" \
        in result.stderr
    result = run("--manifest", str(tmp_path), "--model", "bpr")
    assert result.returncode == 2 and "invalid choice: 'bpr'" in result.stderr
    config = tmp_path / "c.yaml"
    config.write_text("storage:\n  nonsense: 1\n")
    result = run("--manifest", str(tmp_path), "--model", "random", "--config", str(config))
    assert result.returncode == 2 and "storage.nonsense is not a known setting" in result.stderr
    assert "Traceback" not in result.stderr


def test_parse_ks():
    assert parse_ks("20,10, 5,10") == [5, 10, 20]
    for bad in ("", "0", "10,-1", "1.5", "ten"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_ks(bad)


def test_format_metrics():
    result = {"users": 1234, **{f"{p}{m}@{k}": 0.5 for p in ("", "sampled_") for m in ("recall", "ndcg", "hit", "mrr")
                                 for k in (10, 20)}, "coverage@10": 0.25, "coverage@20": 0.125}
    lines = format_metrics(result, [10, 20]).splitlines()
    assert lines[0] == "users 1,234"
    assert lines[1].split() == ["K", "recall", "ndcg", "hit", "mrr", "coverage", "sampled_recall", "sampled_ndcg",
                                "sampled_hit", "sampled_mrr"]
    assert lines[3].split() == ["20", "0.50000", "0.50000", "0.50000", "0.50000", "0.12500", "0.50000", "0.50000",
                                "0.50000", "0.50000"]


def test_listed_in_help():
    result = subprocess.run([sys.executable, "-m", "recsys_ray.cli", "--help"], capture_output=True, text=True)
    assert "evaluate" in result.stdout
