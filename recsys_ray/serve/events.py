"""Upload events on Kafka: one JSON message per landed upload, keyed by tenant.

The message says what landed where (tenant, dataset, upload id, object URIs,
counts) so downstream jobs can react without listing storage. Events are sent
after the rows are durable; a Kafka outage delays or loses events (logged and
counted) but never fails or repeats an upload whose rows are already stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from recsys_ray.config import KafkaConfig
from recsys_ray.io import storage

log = logging.getLogger(__name__)


def upload_event(tenant: str, report: dict[str, Any], root: str) -> dict[str, Any]:
    """The event published for one landed upload; its objects are full URIs under `root`
    (reports name them relative to it)."""
    return {
        "type": "upload.landed",
        "tenant": tenant,
        "dataset": report["dataset"],
        "upload_id": report["upload_id"],
        "objects": [storage.join(root, path) for path in report["objects"]],
        "accepted": report["accepted"],
        "rejected": report["rejected"],
        "duplicates": report["duplicates"],
        "created_at": report["created_at"],
    }


def producer_options(kafka: KafkaConfig) -> dict[str, Any]:
    """aiokafka client settings from the config (security settings included when set)."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "security_protocol": kafka.security_protocol,
        "acks": "all",
        "linger_ms": 5,
    }
    if kafka.sasl_mechanism:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        if kafka.sasl_password is not None:
            options["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    return options


class UploadEventPublisher:
    """Publishes upload events when Kafka is configured; does nothing otherwise.

    The producer starts on first use, in the event loop that serves requests,
    and is restarted on the next publish after a failure.
    """

    def __init__(self, kafka: KafkaConfig, timeout_s: float, root: str) -> None:
        self._kafka = kafka
        self._root = root
        self._timeout_s = timeout_s
        self._producer = None
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self._kafka.bootstrap_servers)

    async def _started(self):
        async with self._lock:
            if self._producer is None:
                from aiokafka import AIOKafkaProducer

                producer = AIOKafkaProducer(**producer_options(self._kafka))
                try:
                    await asyncio.wait_for(producer.start(), self._timeout_s)
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def publish(self, tenant: str, reports: list[dict[str, Any]]) -> int:
        """Send one event per report; returns how many could not be sent."""
        if not self.enabled or not reports:
            return 0
        try:
            producer = await self._started()
            sends = [
                await producer.send(self._kafka.events_topic,
                                    json.dumps(upload_event(tenant, r, self._root)).encode(), key=tenant.encode())
                for r in reports
            ]
            await asyncio.wait_for(asyncio.gather(*sends), self._timeout_s)
            return 0
        except Exception as exc:  # the rows are stored either way; the event is best effort
            log.warning("could not publish %d upload event(s) to %s: %s",
                        len(reports), self._kafka.events_topic, exc)
            await self.close()
            return len(reports)

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await producer.stop()
            except Exception:  # already broken; nothing left to release
                pass
