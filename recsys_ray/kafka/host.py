"""Hosting one consumer-group member on Ray, for the Ray actor and the Serve deployment alike.

`KafkaLoopHost` runs one `KafkaIngestLoop` and the export of its metrics on the
event loop of the process that hosts it, answers health and snapshot calls, and
stops gracefully (land and commit what is buffered, leave the group). The actor
(`recsys_ray.kafka.actor`) and the Serve deployment (`recsys_ray.kafka.deployment`)
differ only in who calls it: `recsys-ray consume`'s supervisor, or Serve's
controller. Build it on a running event loop, i.e. in an async actor's or a
Serve replica's `async __init__`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from recsys_ray.config import RecsysConfig
from recsys_ray.kafka.consumer import KafkaIngestLoop, LoopFailed
from recsys_ray.kafka.metrics import export_forever


class KafkaLoopHost:
    """One consumer-group member named `member`, running from construction until `stop()`."""

    def __init__(self, cfg: RecsysConfig, member: str) -> None:
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
        self.loop = KafkaIngestLoop(cfg, member=member)
        self.loop.start()
        self._metrics = asyncio.get_running_loop().create_task(export_forever(self.loop))

    def health(self) -> dict[str, Any]:
        return self.loop.health()

    def snapshot(self) -> dict[str, Any]:
        return self.loop.snapshot()

    def raise_if_unhealthy(self) -> None:
        self.loop.raise_if_unhealthy()

    async def stop(self) -> dict[str, Any]:
        """Land and commit what is buffered, leave the group; returns the final snapshot
        (a loop that had died says why there, as `health()` did)."""
        try:
            await self.loop.stop()
        except LoopFailed:
            pass
        self._metrics.cancel()
        return self.loop.snapshot()
