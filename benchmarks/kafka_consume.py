"""Kafka consumer throughput: events landed per second next to a bare aiokafka loop.

Produces N JSON interaction events to a fresh topic, then, on the same broker in
the same run, measures

* bare: an aiokafka consumer that only fetches and parses (`json.loads`) every
  message, timed from its first record; it runs before and after the consumer
  and the faster run is the reference;
* fetch only: the same consumer without parsing, the ceiling set by the client
  and the broker;
* landed: `KafkaIngestLoop`, the loop the Ray actor and the Serve deployment
  run: decode, validate, write one Parquet object per partition batch, record the
  ledger, commit. Timed from partition assignment to the last commit.

    ./run bench kafka_consume                        # 1M events, Tansu on loopback
    ./run bench kafka_consume --events 200000 --bootstrap-servers kafka:9092

Without --bootstrap-servers it starts Tansu (in memory) on a free loopback port,
so the broker shares the machine's cores with the consumers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recsys_ray.config import RecsysConfig  # noqa: E402
from recsys_ray.kafka.consumer import KafkaIngestLoop  # noqa: E402

TYPES = ("view", "click", "like", "add_to_cart", "purchase")


def event(i: int, bad_every: int = 0) -> bytes:
    if bad_every and i % bad_every == bad_every - 1:
        return b'{"user_id": "u1", "item_id": '  # truncated JSON: a dead letter
    return json.dumps({
        "user_id": f"u{i % 50_000}",
        "item_id": f"i{(i * 7919) % 20_000}",
        "interaction_type": TYPES[i % 5],
        "timestamp": 1_700_000_000 + i // 10,
        "rating": (i % 5) + 1 if i % 4 == 0 else None,
    }).encode()


async def produce(bootstrap: str, topic: str, count: int, partitions: int, bad_every: int) -> float:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, partitions, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    started = time.perf_counter()
    pending = []
    per_partition = [range(p, count, partitions) for p in range(partitions)]
    for partition, indices in enumerate(per_partition):
        batch = producer.create_batch()
        for i in indices:
            value = event(i, bad_every)
            if batch.append(key=None, value=value, timestamp=None) is None:
                pending.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=None, value=value, timestamp=None)
        pending.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*pending)
    elapsed = time.perf_counter() - started
    await producer.stop()
    return elapsed


async def bare_loop(bootstrap: str, topic: str, count: int, partitions: int, fetch_bytes: int,
                    parse: bool = True) -> float:
    """Fetch and parse every message (or only fetch); returns events per second."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=fetch_bytes,
                                fetch_max_bytes=max(52_428_800, fetch_bytes))
    await consumer.start()
    consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
    seen = 0
    started = None
    while seen < count:
        for records in (await consumer.getmany(timeout_ms=1000)).values():
            started = started or time.perf_counter()
            if parse:
                for record in records:
                    try:
                        json.loads(record.value)
                    except ValueError:
                        pass
            seen += len(records)
    elapsed = time.perf_counter() - started
    await consumer.stop()
    return count / elapsed


async def landed_loop(cfg: RecsysConfig, count: int) -> tuple[float, dict]:
    """Run the consumer until everything is committed; returns events per second and its snapshot."""
    loop = KafkaIngestLoop(cfg, member="bench")
    loop.start()
    while not loop.partitions():
        await asyncio.sleep(0.05)
    started = time.perf_counter()
    while True:
        parts = loop.partitions()
        if loop.stats.messages >= count and all(p["buffered"] == 0 for p in parts) \
                and sum(p["committed"] or 0 for p in parts) >= count:
            break
        if not loop.health()["healthy"]:
            raise RuntimeError(loop.health())
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    snapshot = loop.snapshot()
    await loop.stop()
    return count / elapsed, snapshot


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--batch-records", type=int, default=50_000)
    parser.add_argument("--batch-seconds", type=float, default=1.0,
                        help="time-based flush; it bounds the wait for the last, partial batches")
    parser.add_argument("--bad-every", type=int, default=0, metavar="N",
                        help="make every Nth message invalid JSON (default: none)")
    parser.add_argument("--bootstrap-servers", help="use this broker instead of starting Tansu")
    parser.add_argument("--root", help="storage root for the landed objects (default: a temp dir, removed)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()

    broker = None
    bootstrap = args.bootstrap_servers
    if bootstrap is None:
        from tests.integration.kafka_broker import start_broker

        broker = start_broker()
        bootstrap = broker.bootstrap
    root = args.root or tempfile.mkdtemp(prefix="recsys-bench-kafka-")
    topic = f"bench-{uuid.uuid4().hex[:8]}.interactions"
    try:
        produce_s = asyncio.run(produce(bootstrap, topic, args.events, args.partitions, args.bad_every))
        print(f"produced {args.events} events in {produce_s:.1f}s", file=sys.stderr)
        cfg = RecsysConfig.load(
            storage={"root": root},
            kafka={"bootstrap_servers": bootstrap, "topics": topic, "group_id": f"bench-{uuid.uuid4().hex[:8]}",
                   "default_tenant": "bench", "max_batch_records": args.batch_records,
                   "max_batch_seconds": args.batch_seconds},
        )
        # The bare loop runs before and after the consumer; the faster run is the reference.
        bare_runs = []
        for turn in ("before", "after"):
            if turn == "after":
                landed, snapshot = asyncio.run(landed_loop(cfg, args.events))
                print(f"landed: {landed:,.0f} events/s", file=sys.stderr)
            bare_runs.append(asyncio.run(bare_loop(bootstrap, topic, args.events, args.partitions,
                                                   cfg.kafka.max_partition_fetch_bytes)))
            print(f"bare aiokafka loop: {bare_runs[-1]:,.0f} events/s", file=sys.stderr)
        bare = max(bare_runs)
        print(f"landed / bare: {landed / bare:.0%}", file=sys.stderr)
        fetch_only = asyncio.run(bare_loop(bootstrap, topic, args.events, args.partitions,
                                           cfg.kafka.max_partition_fetch_bytes, parse=False))
        print(f"fetch only (no parsing): {fetch_only:,.0f} events/s", file=sys.stderr)
    finally:
        if broker is not None:
            broker.stop()
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)

    result = {
        "benchmark": "kafka_consume",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "load_average": os.getloadavg(),
        "broker": "tansu (in memory, same machine)" if broker is not None else bootstrap,
        "events": args.events,
        "partitions": args.partitions,
        "batch_records": args.batch_records,
        "batch_seconds": args.batch_seconds,
        "bad_every": args.bad_every,
        "rejected": snapshot["rejected"],
        "bare_events_per_s": round(bare),
        "bare_runs_events_per_s": [round(r) for r in bare_runs],
        "landed_events_per_s": round(landed),
        "fetch_only_events_per_s": round(fetch_only),
        "landed_vs_bare": round(landed / bare, 3),
        "batches": snapshot["batches"],
        "objects": snapshot["objects"],
        "bytes_written": snapshot["bytes_written"],
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
