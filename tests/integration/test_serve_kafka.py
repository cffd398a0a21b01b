"""Upload events published to a real Kafka-protocol broker (Tansu) by the ingestion service."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from tests.integration.kafka_broker import kafka_broker  # noqa: F401 (pytest fixture)
from tests.integration.serve_support import deploy, undeploy


@pytest.fixture(scope="module")
def events_topic(kafka_broker):  # noqa: F811
    topic = f"recsys.uploads.{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=1)
    return topic


async def _read_events(bootstrap: str, topic: str, count: int, quiet_polls: int = 3) -> list[dict]:
    """Every event on the topic: at least `count`, then until `quiet_polls` polls bring nothing more."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        events: list[dict] = []
        quiet = 0
        while len(events) < count or quiet < quiet_polls:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 60)
            quiet = 0 if batch else quiet + 1
            for messages in batch.values():
                events.extend({"key": m.key.decode(), **json.loads(m.value)} for m in messages)
        return events
    finally:
        await consumer.stop()


def test_each_landed_upload_publishes_an_event(ray_session, kafka_broker, events_topic, tmp_path):  # noqa: F811
    svc = deploy("ingest-kafka", str(tmp_path),
                 kafka={"bootstrap_servers": kafka_broker.bootstrap, "events_topic": events_topic})
    try:
        records = svc.client("acme").post("/v1/interactions", json=[
            {"user_id": "u1", "item_id": "i1", "interaction_type": "click", "timestamp": "2024-05-01T00:00:00Z"},
            {"user_id": "u1", "item_id": "", "interaction_type": "click", "timestamp": "2024-05-01T00:00:00Z"},
        ]).json()
        upload = svc.client("globex").post("/v1/uploads/items", content=b"item_id,title\na,A\nb,B\n",
                                           headers={"Content-Type": "text/csv"}).json()
        validated = svc.client("acme").post("/v1/validate/items", json=[{"item_id": "x", "title": "X"}])
        assert validated.status_code == 200
    finally:
        undeploy(svc)

    events = asyncio.run(_read_events(kafka_broker.bootstrap, events_topic, 2))
    by_upload = {e["upload_id"]: e for e in events}
    assert len(events) == 2 and set(by_upload) == {records["upload_id"], upload["upload_id"]}, \
        "exactly one event per landed upload; validate must not publish"
    first = by_upload[records["upload_id"]]
    assert (first["key"], first["tenant"], first["dataset"], first["accepted"], first["rejected"]) == \
        ("acme", "acme", "interactions", 1, 1)
    # Answers name objects relative to the storage root; events give their full URIs.
    assert first["objects"] == [f"{tmp_path}/{path}" for path in records["objects"]]
    second = by_upload[upload["upload_id"]]
    assert (second["tenant"], second["dataset"], second["accepted"], second["objects"]) == \
        ("globex", "items", 2, [f"{tmp_path}/{path}" for path in upload["objects"]])
