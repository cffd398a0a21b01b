"""The consumer as a Ray Serve deployment without HTTP, for one `serve deploy` with ingestion.

Each replica runs one `KafkaIngestLoop` (one consumer-group member). Serve
calls `check_health` periodically and replaces a replica whose loop died or
whose broker stayed unreachable; on a graceful shutdown (`serve delete`,
redeploy, scale-down) it calls `__del__`, which lands and commits what the
replica holds. Add it to a Serve config next to the HTTP application:

    applications:
      - name: recsys-kafka
        route_prefix: null
        import_path: recsys_ray.kafka.deployment:build_app
        args: {config_file: /etc/recsys/config.yaml}

or bind it into another application: `KafkaConsumerDeployment.bind(cfg)`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

from ray import serve

from recsys_ray.config import RecsysConfig
from recsys_ray.kafka.consumer import KafkaIngestLoop, LoopFailed
from recsys_ray.kafka.messages import topic_routes
from recsys_ray.kafka.metrics import export_forever


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    health_check_period_s=10,
    health_check_timeout_s=30,
    graceful_shutdown_timeout_s=300,
)
class KafkaConsumerDeployment:
    """One consumer-group member per replica; no HTTP route of its own."""

    async def __init__(self, cfg: RecsysConfig) -> None:
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
        member = f"{cfg.kafka.group_id}-{socket.gethostname()}-{os.getpid()}"
        self._loop = KafkaIngestLoop(cfg, member=member)
        self._loop.start()
        self._metrics = asyncio.get_running_loop().create_task(export_forever(self._loop))

    async def check_health(self) -> None:
        self._loop.raise_if_unhealthy()

    async def snapshot(self) -> dict[str, Any]:
        return self._loop.snapshot()

    async def __call__(self, *_args: Any) -> dict[str, Any]:
        return self._loop.snapshot()

    async def __del__(self) -> None:
        try:
            await self._loop.stop()
        except LoopFailed:
            pass
        self._metrics.cancel()


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    """Serve application builder: `import_path: recsys_ray.kafka.deployment:build_app`.

    `args` is shaped like the ingestion application's: an optional `config_file`
    (a RecsysConfig YAML file) and sections (`storage`, `validation`, `kafka`, ...)
    that override the file and the `RECSYS_*` environment; dotted keys such as
    `kafka.bootstrap_servers=...` (from `serve run ... key=value`) work too.
    """
    args = dict(args or {})
    config_file = args.pop("config_file", None)
    sections: dict[str, Any] = {}
    for key, value in args.items():
        section, _, name = key.partition(".")
        if name:
            sections.setdefault(section, {})[name] = value
        else:
            sections.setdefault(section, {}).update(value)
    cfg = RecsysConfig.load(config_file, **sections)
    if not cfg.kafka.bootstrap_servers:
        raise ValueError("no Kafka brokers: set kafka.bootstrap_servers or RECSYS_KAFKA_BOOTSTRAP_SERVERS")
    topic_routes(cfg.kafka)
    return KafkaConsumerDeployment.options(
        num_replicas=cfg.kafka.num_replicas,
        ray_actor_options={"num_cpus": cfg.kafka.replica_cpus},
    ).bind(cfg)
