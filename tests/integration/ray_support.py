"""A Ray head of a test's own, started with `ray start --head --block` on free loopback ports.

Only its processes are stopped afterwards (never `ray stop`, which would stop every
Ray on the machine): they are found by the head's temp directory in their command line.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port


def ray_command(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "ray"), *args]


def own_processes(marker: str) -> list[int]:
    """Pids of processes whose command line names `marker` (a test's Ray temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@dataclass
class RayHead:
    process: subprocess.Popen
    gcs_address: str
    dashboard: str  # the job API's URL
    log: Path

    def jobs(self):
        """Every job the cluster has seen, drivers that joined it included."""
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard).list_jobs()


def start_head(env: dict[str, str], log: Path, *, temp_dir: str | None = None, num_cpus: int = 2,
               timeout_s: float = 180.0) -> RayHead:
    """`ray start --head --block` with its dashboard; returns once `ray start` has finished
    (it blocks from then on) and the job API answers."""
    port, dashboard_port = free_port(), free_port()
    args = ["start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
            f"--dashboard-agent-listen-port={free_port()}", f"--ray-client-server-port={free_port()}",
            f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
            f"--num-cpus={num_cpus}", "--disable-usage-stats"]
    if temp_dir:
        args.append(f"--temp-dir={temp_dir}")
    with open(log, "wb") as out:
        process = subprocess.Popen(ray_command(*args), env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    head = RayHead(process, f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard_port}", log)
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            pytest.fail(f"ray start exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if "will now block" in log.read_text(errors="replace"):
                head.jobs()
                return head
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            pytest.fail(f"ray start did not finish within {timeout_s}s:\n{log.read_text()[-3000:]}")
        time.sleep(1.0)


def stop_head(head: subprocess.Popen, marker: str) -> None:
    """SIGTERM to our head's process group, then SIGKILL to whatever of ours is left."""
    for sig, grace_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        for pid in {head.pid, *own_processes(marker)}:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while own_processes(marker) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not own_processes(marker):
            break
    head.wait(timeout=30)
