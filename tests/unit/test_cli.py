"""The `recsys-ray` dispatcher and the one way commands report bad arguments (no Ray started)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from recsys_ray import __version__, cli


def test_an_unknown_command_is_named_with_the_closest_one(capsys):
    assert cli.main(["biuld", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert "recsys-ray: unknown command 'biuld'; did you mean 'build'?" in err
    assert "generate sample data" not in err  # not the whole help


def test_a_command_far_from_every_name_lists_the_commands(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert "commands: demo, generate, build, validate, serve, consume" in capsys.readouterr().err


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"recsys-ray {__version__}\n"


@pytest.mark.parametrize("argv, message", [
    (["build", "--negatives", "-1"], "recsys-ray build: --negatives must be >= 0, got -1\n"),
    (["build", "--test-fraction", "1"], "recsys-ray build: --test-fraction must be < 1.0, got 1.0\n"),
    (["serve", "--port", "0"], "recsys-ray serve: --port must be >= 1, got 0\n"),
    (["build", "--heavy-item-events", "0"], "recsys-ray build: --heavy-item-events must be >= 1, got 0\n"),
])
def test_a_bad_flag_value_is_one_line_naming_the_flag(argv, message, capsys, monkeypatch):
    monkeypatch.delenv("RECSYS_STORAGE_ROOT", raising=False)
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == message


def test_a_bad_value_in_the_config_file_is_named_by_its_key(tmp_path, capsys):
    config = tmp_path / "recsys.yaml"
    config.write_text("build:\n  negatives: many\n  negatvies: 3\n")
    assert cli.main(["build", "--config", str(config)]) == 2
    assert capsys.readouterr().err == ("recsys-ray build: build.negatives must be an integer, got 'many'; "
                                      "build.negatvies is not a known setting\n")


def test_a_missing_config_file_is_one_line(tmp_path, capsys):
    assert cli.main(["validate", str(tmp_path / "f.csv"), "--dataset", "items",
                     "--config", str(tmp_path / "none.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("recsys-ray validate: cannot read the configuration:") and err.count("\n") == 1


def test_python_dash_m_entry_points_report_the_same_way():
    result = subprocess.run([sys.executable, "-m", "recsys_ray.jobs.build", "--negatives", "-1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr == "python -m recsys_ray.jobs.build: --negatives must be >= 0, got -1\n"
