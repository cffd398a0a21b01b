"""The build's progress lines: a stage's start, its heartbeat while it runs, its end."""

from __future__ import annotations

import logging
import time

import pytest

from recsys_ray.build.progress import StageTimer, progress_on_stderr


def test_a_long_stage_keeps_saying_it_is_running(caplog):
    caplog.set_level(logging.INFO, logger="recsys_ray.build")
    timer = StageTimer(heartbeat_s=0.05)
    with timer.stage("examples"):
        time.sleep(0.3)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "stage examples ..."
    assert sum("stage examples running: 0 rows so far" in m for m in messages) >= 3
    assert messages[-1].startswith("stage examples done in 0.")
    assert 0.3 <= timer.seconds["examples"] < 1


def test_a_failed_stage_is_timed_but_not_reported_done(caplog):
    caplog.set_level(logging.INFO, logger="recsys_ray.build")
    timer = StageTimer(heartbeat_s=10)
    with pytest.raises(RuntimeError):
        with timer.stage("validate"):
            raise RuntimeError("bad input")
    assert "validate" in timer.seconds
    assert not any("done" in r.getMessage() for r in caplog.records)


def test_progress_goes_to_stderr_while_the_command_runs_and_the_logger_is_restored_after(capsys, caplog):
    caplog.set_level(logging.INFO, logger="recsys_ray.build")
    with progress_on_stderr():
        with StageTimer(heartbeat_s=10).stage("cutoff"):
            pass
    printed = capsys.readouterr().err
    assert "stage cutoff ..." in printed and "stage cutoff done in" in printed
    assert not caplog.records  # printed once, not also through the root logger
    with StageTimer(heartbeat_s=10).stage("report"):
        pass
    assert [r.getMessage() for r in caplog.records][0] == "stage report ..."
    assert "stage report" not in capsys.readouterr().err
