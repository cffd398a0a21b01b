"""Commands beside a Ray cluster already running on the machine, and commands stopped with SIGTERM.

A head started with `ray start --head` (in a temp directory of this module's own,
through `RAY_TMPDIR`, so that only these tests' commands see it as "the cluster
on this machine") must not be joined unless a command is pointed at it
(`--address`, `RAY_ADDRESS`). Whether a command joined it is read from the
cluster itself: every driver that connects is a job in its job list.

SIGTERM (how Kubernetes, Docker and systemd stop a process) must stop every
long-running command with one line and exit status 143 (killed by SIGTERM),
never Ray's `*** SIGTERM received ... PC: @` crash dump.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from recsys_ray import cli
from tests.conftest import free_port
from tests.integration.kafka_broker import (  # noqa: F401 (kafka_broker is a fixture)
    FAST_GROUP,
    kafka_broker,
    produce_events,
    unique,
    wait_for_commits,
)
from tests.integration.ray_support import start_head, stop_head

CRASH_DUMP = ("*** SIGTERM received", "PC: @")


@pytest.fixture(scope="module")
def outside_ray():
    """A `ray start --head` cluster that `ray.init(address="auto")` would join: (head, env)."""
    root = tempfile.mkdtemp(prefix="rrcli-", dir="/tmp")  # short: Ray's socket paths must fit
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    env.update(RAY_TMPDIR=root, RAY_USAGE_STATS_ENABLED="0",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    head = None
    try:
        head = start_head(env, Path(root) / "ray-start.log", num_cpus=1)
        # `ray start` told every later `ray.init(address="auto")` on this machine where it is.
        written = (Path(root) / "ray" / "ray_current_cluster").read_text().strip()
        assert written.rsplit(":", 1)[1] == head.gcs_address.rsplit(":", 1)[1]
        yield head, env
    finally:
        if head is not None:
            stop_head(head.process, root)
        shutil.rmtree(root, ignore_errors=True)


def drivers(head) -> list:
    return [job for job in head.jobs() if job.type == "DRIVER"]


def recsys(env, *argv, **popen):
    return [sys.executable, "-m", "recsys_ray.cli", *argv], dict(env=env, text=True, **popen)


def run(env, *argv, timeout=300):
    command, options = recsys(env, *argv)
    return subprocess.run(command, capture_output=True, timeout=timeout, **options)


@contextmanager
def running(env, *argv):
    """The command running in the background; killed at the end if it is still running."""
    command, options = recsys(env, *argv)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **options)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def stop_with_sigterm(process, timeout=180) -> tuple[str, str]:
    """SIGTERM to the command: it must stop with one line and exit as killed by SIGTERM."""
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == -signal.SIGTERM, f"exit {process.returncode}\n{err[-3000:]}"
    assert "stopped by SIGTERM" in err, err[-3000:]
    assert not any(mark in out + err for mark in CRASH_DUMP), err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    return out, err


def read_until(stream, text: str, process, timeout=180.0) -> str:
    deadline = time.monotonic() + timeout
    seen = []
    os.set_blocking(stream.fileno(), True)
    for line in stream:
        seen.append(line)
        if text in line:
            return "".join(seen)
        assert time.monotonic() < deadline and process.poll() is None, "".join(seen)[-3000:]
    raise AssertionError(f"the command exited before printing {text!r}:\n{''.join(seen)[-3000:]}")


@pytest.fixture(scope="module")
def small_inputs(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli-inputs")
    assert cli.main(["generate", "--out", str(out), "--users", "200", "--items", "100",
                     "--interactions", "3000", "--seed", "4"]) == 0
    return out


def build_argv(inputs: Path, out: Path, *extra: str) -> list[str]:
    return ["build", "--interactions", str(inputs / "interactions.parquet"), "--items",
            str(inputs / "items.parquet"), "--out", str(out), "--version", "v1", "--quiet", *extra]


@pytest.fixture(scope="module")
def version_built_beside(outside_ray, small_inputs, tmp_path_factory):
    """`recsys-ray build` run while the outside cluster is up: (result, version dir)."""
    head, env = outside_ray
    out = tmp_path_factory.mktemp("cli-build") / "v1"
    return run(env, *build_argv(small_inputs, out)), out


def test_build_starts_a_ray_of_its_own_beside_a_running_cluster(outside_ray, version_built_beside):
    head, _ = outside_ray
    result, out = version_built_beside
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "manifest.json").read_text())["counts"]["input_rows"] == 3000
    assert "Started a local Ray instance" not in result.stdout + result.stderr  # --quiet
    assert drivers(head) == []


@pytest.mark.parametrize("how", ["--address", "RAY_ADDRESS"])
def test_build_joins_the_cluster_it_is_pointed_at(outside_ray, small_inputs, tmp_path, how):
    head, env = outside_ray
    before = len(drivers(head))
    extra = ("--address", head.gcs_address) if how == "--address" else ()
    env = {**env, "RAY_ADDRESS": head.gcs_address} if how == "RAY_ADDRESS" else env
    result = run(env, *build_argv(small_inputs, tmp_path / "v1", *extra))
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(drivers(head)) == before + 1


def test_demo_starts_a_ray_of_its_own_beside_a_running_cluster(outside_ray, tmp_path):
    head, env = outside_ray
    before = len(drivers(head))
    result = run(env, "demo", "--root", str(tmp_path), "--interactions", "2000", "--users", "100",
                 "--items", "80")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "tenants" / "demo" / "training" / "demo" / "manifest.json").exists()
    assert len(drivers(head)) == before


def test_train_example_starts_a_ray_of_its_own_beside_a_running_cluster(outside_ray, version_built_beside):
    pytest.importorskip("torch")
    head, env = outside_ray
    before = len(drivers(head))
    _, version = version_built_beside
    result = subprocess.run([sys.executable, "-m", "recsys_ray.train.example", "--manifest", str(version),
                             "--epochs", "1", "--num-workers", "1", "--cpus-per-worker", "0.5"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics, _ = json.JSONDecoder().raw_decode(result.stdout, result.stdout.index("{"))  # then the ranking table
    assert Path(metrics["checkpoint"]).is_relative_to(version / "runs")
    assert len(drivers(head)) == before


def test_serve_beside_a_running_cluster_serves_then_stops_cleanly_on_sigterm(outside_ray, tmp_path):
    head, env = outside_ray
    before = len(drivers(head))
    port = free_port()
    with running(env, "serve", "--host", "127.0.0.1", "--port", str(port), "--storage-root", str(tmp_path),
                 "--replica-cpus", "0.25") as process:
        read_until(process.stdout, "is serving on", process, timeout=240)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as response:
            assert response.status == 200
        assert len(drivers(head)) == before
        stop_with_sigterm(process)


def test_consume_beside_a_running_cluster_lands_what_it_holds_on_sigterm(outside_ray, kafka_broker, tmp_path):
    head, env = outside_ray
    before = len(drivers(head))
    topic, group = unique("cli.interactions"), unique("g")
    kafka_broker.create_topic(topic, 3)
    produced = produce_events(kafka_broker, topic, 600)
    config_file = tmp_path / "kafka.yaml"
    config_file.write_text(json.dumps({"kafka": FAST_GROUP}))
    with running(env, "consume", "--bootstrap-servers", kafka_broker.bootstrap, "--topics", topic,
                 "--root", str(tmp_path / "data"), "--group", group, "--tenant", "shop",
                 "--config", str(config_file), "--health-period", "1", "--max-batch-seconds", "600",
                 "--replica-cpus", "0.1") as process:
        read_until(process.stderr, "partitions=3", process, timeout=240)
        assert len(drivers(head)) == before
        out, _ = stop_with_sigterm(process)
    (snapshot,) = json.loads(out.strip().splitlines()[-1])["consumers"]
    assert snapshot["messages"] == 600  # everything buffered was landed before the exit
    assert kafka_broker.committed(group, topic) == produced.end_offsets


def test_build_stops_cleanly_on_sigterm(outside_ray, tmp_path):
    _, env = outside_ray
    inputs = tmp_path / "raw"
    assert cli.main(["generate", "--out", str(inputs), "--users", "20000", "--items", "5000",
                     "--interactions", "600000", "--seed", "9"]) == 0
    sessions = set((Path(env["RAY_TMPDIR"]) / "ray").glob("session_2*"))
    with running(env, *build_argv(inputs, tmp_path / "v1")) as process:
        deadline = time.monotonic() + 180
        while True:  # the build's own Ray is up and its driver connected: the build is running
            logs = [log for session in set((Path(env["RAY_TMPDIR"]) / "ray").glob("session_2*")) - sessions
                    for log in (session / "logs").glob("python-core-driver-*")]
            if logs:
                break
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
            time.sleep(0.2)
        time.sleep(2.0)
        stop_with_sigterm(process)
    assert not (tmp_path / "v1" / "manifest.json").exists()
