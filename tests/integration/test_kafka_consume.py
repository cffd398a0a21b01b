"""The Kafka consumer against a real Kafka-protocol broker (Tansu) and a real Ray instance."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from recsys_ray.config import RecsysConfig
from recsys_ray.io import storage
from recsys_ray.kafka.consumer import KafkaIngestLoop, LoopFailed
from recsys_ray.kafka.landing import land_partition_batch
from recsys_ray.kafka.messages import PartitionBatch, topic_routes
from tests.integration.kafka_broker import (  # noqa: F401 (kafka_broker is a fixture)
    FAST_GROUP,
    ProducedEvents,
    assert_exactly_once,
    consumer_config as config,
    dead_letters,
    kafka_broker,
    landed_event_ids,
    produce_events,
    start_broker,
    unique,
    wait_for_commits,
)

def test_tens_of_thousands_of_events_land_once_and_bad_ones_become_dead_letters(kafka_broker, ray_session,
                                                                                  tmp_path):
    """An actor on Ray consumes 30k interactions (5% bad) and a catalog topic."""
    from recsys_ray.kafka.actor import start_consumers, stop_consumers

    topic, items_topic, group = unique("shop.interactions"), unique("shop.items"), unique("g")
    kafka_broker.create_topic(topic, 3)
    kafka_broker.create_topic(items_topic, 1)
    produced = produce_events(kafka_broker, topic, 30_000, tenants=("acme", None, "zeta"))
    catalog = [json.dumps({"item_id": f"i{i}", "title": f"Item {i}", "price": i}).encode() for i in range(500)]
    catalog.append(b'{"item_id": "no-title"}')
    kafka_broker.produce(items_topic, catalog, partitions=1)

    cfg = config(kafka_broker, tmp_path, f"{topic},{items_topic}", group, max_batch_records=4000,
                 max_batch_seconds=1.0)
    actors = start_consumers(cfg)
    try:
        wait_for_commits(kafka_broker, group, produced, check=lambda: _assert_healthy(ray_session, actors))
        wait_for_commits(kafka_broker, group, ProducedEvents(items_topic, {}, {}, {0: 501}), partitions=1)
        (snapshot,) = stop_consumers(actors)
    finally:
        for actor in actors:
            ray_session.kill(actor)

    assert_exactly_once(str(tmp_path), produced)
    assert sorted(produced.expected) == ["acme", "shop", "zeta"]
    assert snapshot["messages"] == 30_000 + 501
    assert snapshot["rejected"] == len(produced.dead) + 1
    # a retry lands in another partition than its original, so each valid message is a landed row
    assert snapshot["landed"] == produced.valid_messages + 500
    assert {p["lag"] for p in snapshot["partitions"]} == {0}
    # the catalog landed once; the item without a title is a dead letter
    catalog_files = storage.list_files(str(tmp_path / "tenants" / "shop" / "raw" / "items"))
    assert sum(storage.read_table(f.uri).num_rows for f in catalog_files) == 500
    (letter,) = dead_letters(str(tmp_path), "items")
    assert letter["reason"] == "missing_field" and letter["original"] == '{"item_id": "no-title"}'
    assert letter["source"] == f"kafka:{items_topic}:0:500"


def _assert_healthy(ray, actors) -> None:
    for actor in actors:
        status = ray.get(actor.health.remote(), timeout=60)
        assert status["healthy"], status


async def _run_until_committed(loop: KafkaIngestLoop, broker, group, produced, timeout=120.0):
    loop.start()
    deadline = time.monotonic() + timeout
    while True:
        committed = await asyncio.to_thread(broker.committed, group, produced.topic)
        if all((committed.get(p) or 0) >= end for p, end in produced.end_offsets.items()):
            break
        assert loop.health()["healthy"], loop.health()
        assert time.monotonic() < deadline, f"committed {committed}, expected {produced.end_offsets}"
        await asyncio.sleep(0.3)
    await loop.stop()


def _land_without_commit(broker, cfg, topic, per_partition: int) -> None:
    """What a consumer that died between writing and committing leaves behind: the
    first `per_partition` messages of each partition landed, nothing committed."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def fetch():
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest")
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(tps)
        records = {tp: [] for tp in tps}
        while any(len(r) < per_partition for r in records.values()):
            for tp, batch in (await consumer.getmany(timeout_ms=500)).items():
                records[tp].extend(batch)
        await consumer.stop()
        return {tp.partition: r[:per_partition] for tp, r in records.items()}

    routes = topic_routes(cfg.kafka)
    for partition, records in asyncio.run(fetch()).items():
        batch = PartitionBatch(topic, partition, [r.offset for r in records], [r.value for r in records],
                               records[0].offset, records[-1].offset)
        land_partition_batch(batch, routes[topic], cfg, cfg.kafka.group_id)


@pytest.mark.parametrize("store", ["disk", "s3"])
def test_a_crash_between_write_and_commit_is_undone_exactly_despite_new_batch_boundaries(kafka_broker, store,
                                                                                        tmp_path, request):
    root = f"s3://{request.getfixturevalue('s3_bucket')}/recsys" if store == "s3" else str(tmp_path)
    topic, group = unique("crash.interactions"), unique("g")
    kafka_broker.create_topic(topic, 3)
    produced = produce_events(kafka_broker, topic, 6000)
    crashed = config(kafka_broker, root, topic, group, max_batch_records=1500)
    _land_without_commit(kafka_broker, crashed, topic, per_partition=1500)
    assert kafka_broker.committed(group, topic) == {0: None, 1: None, 2: None}

    # The restarted consumer cuts batches of 700: the ledger makes it re-create [0, 1499] first.
    restarted = config(kafka_broker, root, topic, group, max_batch_records=700, max_batch_seconds=0.5)
    loop = KafkaIngestLoop(restarted)
    asyncio.run(_run_until_committed(loop, kafka_broker, group, produced))
    assert loop.stats.replays == 3  # one batch per partition re-created as recorded
    assert loop.stats.messages == 6000  # everything was read again from offset 0 ...
    assert_exactly_once(root, produced)  # ... and is stored once


def test_a_stale_writer_duplicates_rows_but_the_build_keeps_each_event_once(kafka_broker, tmp_path,
                                                                            ray_session):
    """Without the ledger (a consumer that lost its partitions but still wrote, with other
    batch boundaries) the raw zone holds repeats; event ids make the build count each event once."""
    from recsys_ray.build import build_training_data

    topic, group = unique("stale.interactions"), unique("g")
    kafka_broker.create_topic(topic, 3)
    produced = produce_events(kafka_broker, topic, 1200, tenants=(None,))
    stale = config(kafka_broker, tmp_path, topic, group, max_batch_records=250)
    _land_without_commit(kafka_broker, stale, topic, per_partition=250)
    storage.delete(storage.join(str(tmp_path), "_kafka"))

    loop = KafkaIngestLoop(config(kafka_broker, tmp_path, topic, group, max_batch_records=400,
                                  max_batch_seconds=0.5))
    asyncio.run(_run_until_committed(loop, kafka_broker, group, produced))
    stored = landed_event_ids(str(tmp_path))["shop"]
    dead_early = sum(1 for source in produced.dead if int(source.rsplit(":", 1)[1]) < 250)
    # a retry sits in another partition than its original: every valid message is a stored row
    assert len(stored) == produced.valid_messages + 3 * 250 - dead_early
    assert_exactly_once(str(tmp_path), produced, physically=False)

    build_cfg = RecsysConfig.load(storage={"root": str(tmp_path)},
                                  build={"tenant": "shop", "version": "v1", "negatives": 1})
    manifest = build_training_data(build_cfg)
    assert manifest.counts.events == produced.valid_count


def test_a_producer_retry_of_an_event_without_id_is_one_event_in_the_build(kafka_broker, ray_session,
                                                                            tmp_path):
    """A producer that retries sends the same event again at a later offset, in the same or
    another partition: it gets the same content-derived id as the first copy (the id HTTP
    and file ingestion give it), so the build reads it once."""
    from recsys_ray.build import build_training_data
    from tests.integration.kafka_broker import content_event_ids

    topic, group = unique("retry.interactions"), unique("g")
    kafka_broker.create_topic(topic, 2)
    events = [{"user_id": f"u{i % 40}", "item_id": f"i{i % 30}", "interaction_type": "click",
               "timestamp": 1_700_000_000 + 60 * i} for i in range(300)]
    originals = kafka_broker.produce(topic, [json.dumps(e).encode() for e in events], partitions=2)
    retried = list(range(0, 300, 3))
    again = kafka_broker.produce(topic, [json.dumps(events[i]).encode() for i in retried], partitions=2,
                                 partition_of=[(i + k) % 2 for k, i in enumerate(retried)])
    assert all(offset != originals[i][1] or partition != originals[i][0]
               for (partition, offset), i in zip(again, retried))
    ends = {p: 1 + max(o for q, o in originals + again if q == p) for p in (0, 1)}

    loop = KafkaIngestLoop(config(kafka_broker, tmp_path, topic, group, max_batch_records=50,
                                  max_batch_seconds=0.5))
    asyncio.run(_run_until_committed(loop, kafka_broker, group, ProducedEvents(topic, {}, {}, ends)))
    stored = landed_event_ids(str(tmp_path))["shop"]
    assert len(stored) == 300 + len(retried)  # each retry landed in a batch of its own ...
    assert set(stored) == set(content_event_ids(events))  # ... as the event it repeats

    manifest = build_training_data(RecsysConfig.load(storage={"root": str(tmp_path)},
                                                     build={"tenant": "shop", "version": "v1", "negatives": 1}))
    assert manifest.counts.events == 300
    assert manifest.counts.duplicates == len(retried)


def _consume_command(broker, root, topic, group, address, *extra):
    config_file = root / f"{group}.yaml"
    config_file.write_text(json.dumps({"kafka": FAST_GROUP}))
    return subprocess.Popen(
        [sys.executable, "-m", "recsys_ray.cli", "consume", "--bootstrap-servers", broker.bootstrap,
         "--topics", topic, "--root", str(root), "--group", group, "--tenant", "shop", "--address", address,
         "--config", str(config_file), "--health-period", "1", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_graceful_stop_lands_everything_and_a_restart_resumes_from_committed_offsets(kafka_broker,
                                                                                     ray_session, tmp_path):
    topic, group = unique("stop.interactions"), unique("g")
    kafka_broker.create_topic(topic, 3)
    address = ray_session.get_runtime_context().gcs_address
    first = produce_events(kafka_broker, topic, 3000)

    # Batches are due only after 10 minutes: everything landed was landed by the graceful stop.
    process = _consume_command(kafka_broker, tmp_path, topic, group, address, "--max-batch-seconds", "600")
    _wait_until_assigned(process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGTERM, err[-3000:]  # stopped by it, after landing
    (snapshot,) = json.loads(out.strip().splitlines()[-1])["consumers"]
    assert snapshot["messages"] == 3000
    assert kafka_broker.committed(group, topic) == first.end_offsets
    assert_exactly_once(str(tmp_path), first)

    second = produce_events(kafka_broker, topic, 1500, start=3000)
    process = _consume_command(kafka_broker, tmp_path, topic, group, address, "--max-batch-seconds", "0.5")
    try:
        wait_for_commits(kafka_broker, group, second)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGTERM, err[-3000:]  # stopped by it, after landing
    (snapshot,) = json.loads(out.strip().splitlines()[-1])["consumers"]
    assert snapshot["messages"] == 1500  # nothing before the committed offsets was read again
    assert_exactly_once(str(tmp_path), first.merge(second))


def _wait_until_assigned(process, timeout: float = 120.0) -> None:
    """Read the command's log until a health line shows assigned partitions."""
    deadline = time.monotonic() + timeout
    os.set_blocking(process.stderr.fileno(), True)
    for line in process.stderr:
        if "partitions=3" in line:
            return
        assert time.monotonic() < deadline and process.poll() is None, "consumer never got its partitions"
    raise AssertionError("the consume command exited early")


def test_health_fails_when_the_broker_stays_unreachable(tmp_path):
    broker = start_broker()
    topic, group = unique("health.interactions"), unique("g")
    try:
        broker.create_topic(topic, 1)
        loop = KafkaIngestLoop(config(broker, tmp_path, topic, group, max_unreachable_seconds=2.0))

        async def scenario():
            loop.start()
            while not loop.partitions():
                await asyncio.sleep(0.2)
            assert loop.health()["healthy"]
            broker.stop()
            deadline = time.monotonic() + 60
            while loop.health()["healthy"]:
                assert time.monotonic() < deadline, "health never noticed the broker was gone"
                await asyncio.sleep(0.2)
            return loop.health()

        status = asyncio.run(asyncio.wait_for(scenario(), 120))
        assert not status["healthy"] and "unreachable" in status["reason"]
    finally:
        broker.stop()


def test_health_fails_when_the_loop_dies(kafka_broker, tmp_path):
    topic, group = unique("dies.interactions"), unique("g")
    kafka_broker.create_topic(topic, 1)
    produce_events(kafka_broker, topic, 10, partitions=1)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the storage root should be")
    loop = KafkaIngestLoop(config(kafka_broker, blocker / "root", topic, group, max_batch_seconds=0.2))

    async def scenario():
        loop.start()
        deadline = time.monotonic() + 90
        while loop.health()["healthy"]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        return loop.health()

    status = asyncio.run(scenario())
    assert "loop died" in status["reason"]
    with pytest.raises(LoopFailed):
        asyncio.run(loop.stop())
    assert kafka_broker.committed(group, topic, 1) == {0: None}
