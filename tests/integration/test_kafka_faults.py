"""Crashes, restarts and rebalances of the Kafka consumer: every event still lands exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from recsys_ray.io import storage
from tests.integration.kafka_broker import (  # noqa: F401 (kafka_broker is a fixture)
    FAST_GROUP,
    assert_exactly_once,
    consumer_config,
    kafka_broker,
    produce_events,
    unique,
    wait_for_commits,
)

WAVE = 6000


def _objects(root) -> int:
    return len(storage.list_files(str(root / "tenants"), suffixes=(".parquet",))) if (root / "tenants").exists() else 0


def _wait_for_new_objects(root, seen: int, timeout: float = 120.0) -> int:
    """Wait until a batch of the current wave has landed, i.e. the consumer is mid-stream."""
    deadline = time.monotonic() + timeout
    while (count := _objects(root)) <= seen:
        assert time.monotonic() < deadline, "the consumer landed nothing"
        time.sleep(0.02)
    return count


def _pid_once_running(ray, actor, killed: int | None, timeout: float = 120.0) -> int:
    """The actor's process id once it runs in a process other than `killed`."""
    from ray.exceptions import RayActorError

    deadline = time.monotonic() + timeout
    while True:
        try:
            pid = ray.get(actor.snapshot.remote(), timeout=timeout)["pid"]
            if pid != killed:
                return pid
        except RayActorError:  # noticed dead, not restarted yet
            pass
        assert time.monotonic() < deadline, "the actor was not restarted"
        time.sleep(0.2)


def test_killing_the_actor_mid_stream_loses_and_duplicates_nothing(kafka_broker, ray_session, tmp_path):
    """SIGKILL of the actor's process twice and `ray.kill` once, each in the middle of a wave:
    Ray restarts the actor (max_restarts), which resumes from the committed offsets."""
    from recsys_ray.kafka.actor import start_consumers, stop_consumers

    topic, group = unique("kill.interactions"), unique("g")
    kafka_broker.create_topic(topic, 3)
    cfg = consumer_config(kafka_broker, tmp_path, topic, group, max_batch_records=250, max_batch_seconds=0.2)
    (actor,) = start_consumers(cfg)
    produced = None
    pids = []
    try:
        seen = 0
        for wave, kill in enumerate(["sigkill", "ray.kill", "sigkill", None]):
            pid = _pid_once_running(ray_session, actor, killed=pids[-1] if pids else None)
            pids.append(pid)
            part = produce_events(kafka_broker, topic, WAVE, start=wave * WAVE)
            produced = part if produced is None else produced.merge(part)
            seen = _wait_for_new_objects(tmp_path, seen)
            if kill == "sigkill":
                os.kill(pid, signal.SIGKILL)
            elif kill == "ray.kill":
                ray_session.kill(actor, no_restart=False)
        wait_for_commits(kafka_broker, group, produced)
        (final,) = stop_consumers([actor])
    finally:
        ray_session.kill(actor)
    assert len(set(pids)) == 4, "each kill must have restarted the actor in a new process"
    assert final["healthy"] is False and final["reason"] == "stopped"
    assert_exactly_once(str(tmp_path), produced)


def _consume_command(broker, root, topic, group, address, *extra):
    config_file = root.parent / f"{group}.yaml"
    config_file.write_text(json.dumps({"kafka": FAST_GROUP}))
    return subprocess.Popen(
        [sys.executable, "-m", "recsys_ray.cli", "consume", "--bootstrap-servers", broker.bootstrap,
         "--topics", topic, "--root", str(root), "--group", group, "--tenant", "shop", "--address", address,
         "--config", str(config_file), "--health-period", "1", "--max-batch-records", "250",
         "--max-batch-seconds", "0.2", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def test_killing_the_consume_command_then_starting_it_again(kafka_broker, ray_session, tmp_path):
    """SIGKILL of the `recsys-ray consume` process (its actors die with it) at two points."""
    topic, group = unique("cli.interactions"), unique("g")
    kafka_broker.create_topic(topic, 3)
    root = tmp_path / "data"
    address = ray_session.get_runtime_context().gcs_address
    produced = None
    seen = 0
    for wave in range(3):
        part = produce_events(kafka_broker, topic, WAVE, start=wave * WAVE)
        produced = part if produced is None else produced.merge(part)
        process = _consume_command(kafka_broker, root, topic, group, address)
        try:
            if wave < 2:
                seen = _wait_for_new_objects(root, seen)
                process.kill()
            else:
                wait_for_commits(kafka_broker, group, produced)
                process.send_signal(signal.SIGTERM)
                assert process.wait(timeout=120) == -signal.SIGTERM  # stopped by it, after landing
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
    assert_exactly_once(str(root), produced)


def test_two_consumers_in_one_group_share_partitions_across_a_rebalance(kafka_broker, ray_session, tmp_path):
    """A second consumer joins mid-stream: partitions are revoked, committed and shared."""
    from recsys_ray.kafka.actor import start_consumers, stop_consumers

    topic, group = unique("pair.interactions"), unique("g")
    kafka_broker.create_topic(topic, 3)
    cfg = consumer_config(kafka_broker, tmp_path, topic, group, max_batch_records=250, max_batch_seconds=0.2)
    first = start_consumers(cfg)
    second = []
    try:
        produced = produce_events(kafka_broker, topic, WAVE)
        _wait_for_new_objects(tmp_path, 0)
        second = start_consumers(cfg)
        ray_session.get(second[0].health.remote(), timeout=120)
        deadline = time.monotonic() + 120
        while not ray_session.get(second[0].snapshot.remote())["partitions"]:
            assert time.monotonic() < deadline, "the second consumer never got a partition"
            time.sleep(0.2)
        produced = produced.merge(produce_events(kafka_broker, topic, WAVE, start=WAVE))
        wait_for_commits(kafka_broker, group, produced)
        # While both run, the group's assignment settles into a split of the partitions.
        deadline = time.monotonic() + 120
        while True:
            running = ray_session.get([a.snapshot.remote() for a in first + second])
            owned = [{(p["topic"], p["partition"]) for p in s["partitions"]} for s in running]
            if owned[0] and owned[1] and not owned[0] & owned[1] and len(owned[0] | owned[1]) == 3:
                break
            assert time.monotonic() < deadline, f"partitions were never shared: {owned}"
            time.sleep(0.2)
        snapshots = stop_consumers(first + second)
    finally:
        for actor in first + second:
            ray_session.kill(actor)
    assert all(s["landed"] > 0 for s in snapshots)
    assert_exactly_once(str(tmp_path), produced)
