"""Consumer metrics through Ray's metrics API (scraped from Ray's Prometheus endpoint).

Exported every few seconds from the loop's snapshot, by the actor and by the
Serve deployment alike:

    recsys_kafka_events_landed{tenant, dataset}   rows written to raw zones
    recsys_kafka_events_rejected{reason}          rows and messages sent to the dead letters
    recsys_kafka_batches_landed                   batches landed and committed
    recsys_kafka_commit_failures                  commits refused after a rebalance
    recsys_kafka_consumer_lag{topic, partition}   high watermark minus committed offset
    recsys_kafka_healthy{member}                  1 while the loop runs and reaches the broker
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray.util import metrics

from recsys_ray.kafka.consumer import KafkaIngestLoop

log = logging.getLogger(__name__)
EXPORT_PERIOD_S = 5.0


class MetricsExporter:
    """Turns successive loop snapshots into Ray counter increments and gauge values."""

    def __init__(self) -> None:
        self.landed = metrics.Counter("recsys_kafka_events_landed", "Kafka events landed in raw zones",
                                      tag_keys=("tenant", "dataset"))
        self.rejected = metrics.Counter("recsys_kafka_events_rejected", "Kafka events sent to the dead letters",
                                        tag_keys=("reason",))
        self.batches = metrics.Counter("recsys_kafka_batches_landed", "Kafka batches landed and committed")
        self.commit_failures = metrics.Counter("recsys_kafka_commit_failures",
                                               "Kafka commits refused after a rebalance")
        self.lag = metrics.Gauge("recsys_kafka_consumer_lag", "High watermark minus committed offset",
                                 tag_keys=("topic", "partition"))
        self.healthy = metrics.Gauge("recsys_kafka_healthy", "1 while the consumer loop is healthy",
                                     tag_keys=("member",))
        self._previous: dict[str, Any] = {"landed_by_tenant": {}, "rejected_by_reason": {},
                                          "batches": 0, "commit_failures": 0}

    def export(self, snapshot: dict[str, Any]) -> None:
        before = self._previous
        for key, rows in snapshot["landed_by_tenant"].items():
            delta = rows - before["landed_by_tenant"].get(key, 0)
            if delta > 0:
                tenant, dataset = key.split("/", 1)
                self.landed.inc(delta, tags={"tenant": tenant, "dataset": dataset})
        for reason, rows in snapshot["rejected_by_reason"].items():
            delta = rows - before["rejected_by_reason"].get(reason, 0)
            if delta > 0:
                self.rejected.inc(delta, tags={"reason": reason})
        for name in ("batches", "commit_failures"):
            delta = snapshot[name] - before[name]
            if delta > 0:
                getattr(self, name).inc(delta)
        for partition in snapshot["partitions"]:
            if partition["lag"] is not None:
                self.lag.set(partition["lag"], tags={"topic": partition["topic"],
                                                     "partition": str(partition["partition"])})
        self.healthy.set(1.0 if snapshot["healthy"] else 0.0, tags={"member": snapshot["member"]})
        self._previous = snapshot


async def export_forever(loop: KafkaIngestLoop, period_s: float = EXPORT_PERIOD_S) -> None:
    """Export the loop's metrics every `period_s` seconds until cancelled."""
    try:
        exporter = MetricsExporter()
    except Exception:
        log.warning("Ray metrics are unavailable; Kafka consumer metrics are not exported", exc_info=True)
        return
    while True:
        try:
            exporter.export(loop.snapshot())
        except Exception:
            log.warning("exporting Kafka consumer metrics failed", exc_info=True)
        await asyncio.sleep(period_s)
