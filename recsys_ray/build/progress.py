"""What a build says while it runs: one line when a stage starts and ends, and while a
long stage runs a line every `HEARTBEAT_S` seconds with the rows it has produced so far.

Lines go to the `recsys_ray.build` logger at INFO (the CLI shows them on stderr unless
--quiet), so a 20-minute build is never silent and a log collector gets a handful of
lines instead of Ray Data's per-operator progress every ten seconds.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ray.data._internal.execution.execution_callback import ExecutionCallback

log = logging.getLogger("recsys_ray.build")

HEARTBEAT_S = 30.0


class _RowsSoFar(ExecutionCallback):
    """Counts the rows the executing dataset has produced (its output operator's task outputs)."""

    rows = 0

    def before_execution_starts(self, executor) -> None:
        _RowsSoFar.rows = 0

    def on_execution_step(self, executor) -> None:
        node = getattr(executor, "_output_node", None)
        metrics = getattr(node[0], "metrics", None) if node else None
        _RowsSoFar.rows = int(getattr(metrics, "rows_task_outputs_generated", 0) or 0)


ROWS_CALLBACK = _RowsSoFar

# Ray Data checks for free CPUs just as the previous execution's tasks release theirs
# and warns that the job "will hang"; the build holds no CPUs between executions.
_FALSE_ALARMS = ("Warning: The Ray cluster currently does not have any available CPUs",)


class _BuildConsoleFilter(logging.Filter):
    """Ray Data's console output during a build: warnings and errors, less known false alarms.
    Its INFO lines (one per finished execution) stay in its own log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and not str(record.msg).startswith(_FALSE_ALARMS)


@contextmanager
def ray_data_console_for_builds() -> Iterator[None]:
    """While the block runs, Ray Data's console handlers pass only what a build user needs."""
    console = [h for h in logging.getLogger("ray.data").handlers
               if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    quiet = _BuildConsoleFilter()
    for handler in console:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in console:
            handler.removeFilter(quiet)


@dataclass
class StageTimer:
    """Wall time per named stage, in the order the stages ran, reported as it goes.

    Each stage ends with a garbage collection: Ray Data's finished executions
    sit in reference cycles that still hold object refs, and until Python
    collects them the object store keeps the blocks of datasets the build has
    already dropped (about 1 GB of validated rows at 10M interactions).
    """

    heartbeat_s: float = HEARTBEAT_S
    seconds: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        _RowsSoFar.rows = 0  # until the stage's first execution reports
        log.info("stage %s ...", name)
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(name, start, done), daemon=True)
        beat.start()
        ok = False
        try:
            yield
            ok = True
        finally:
            done.set()
            beat.join()
            gc.collect()
            elapsed = time.perf_counter() - start
            self.seconds[name] = round(self.seconds.get(name, 0.0) + elapsed, 3)
            if ok:
                log.info("stage %s done in %.1f s (build %.1f s)", name, elapsed, time.perf_counter() - self.started)

    def _heartbeat(self, name: str, start: float, done: threading.Event) -> None:
        while not done.wait(self.heartbeat_s):
            log.info("stage %s running: %s rows so far, %.0f s", name, f"{_RowsSoFar.rows:,}",
                     time.perf_counter() - start)


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a line is logged (it may be replaced meanwhile)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


@contextmanager
def progress_on_stderr() -> Iterator[None]:
    """While the block runs, print the build's progress lines on stderr (what the CLI does
    unless --quiet), and only there; the logger is as it was afterwards."""
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    level, propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        log.propagate = propagate
