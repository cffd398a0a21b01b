"""The consumer as a Ray Serve deployment without HTTP, for one `serve deploy` with ingestion.

Each replica hosts one consumer-group member (`KafkaLoopHost`, as the actor of
`recsys-ray consume` does). Serve calls `check_health` periodically and replaces
a replica whose loop died or whose broker stayed unreachable; on a graceful
shutdown (`serve delete`, redeploy, scale-down) it calls `__del__`, which lands
and commits what the replica holds. Add it to a Serve config next to the HTTP
application:

    applications:
      - name: recsys-kafka
        route_prefix: null
        import_path: recsys_ray.kafka.deployment:build_app
        args: {config_file: /etc/recsys/config.yaml}

or bind it into another application: `KafkaConsumerDeployment.bind(cfg)`.
"""

# No `from __future__ import annotations` here: Serve reads `build_app`'s
# argument annotation as a class to validate the builder's args.

import os
import socket
from typing import Any

from ray import serve

from recsys_ray.config import RecsysConfig, ServeAppArgs
from recsys_ray.kafka.host import KafkaLoopHost
from recsys_ray.kafka.messages import topic_routes


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    health_check_period_s=10,
    health_check_timeout_s=30,
    graceful_shutdown_timeout_s=300,
)
class KafkaConsumerDeployment:
    """One consumer-group member per replica; no HTTP route of its own."""

    async def __init__(self, cfg: RecsysConfig) -> None:
        self._host = KafkaLoopHost(cfg, f"{cfg.kafka.group_id}-{socket.gethostname()}-{os.getpid()}")

    async def check_health(self) -> None:
        self._host.raise_if_unhealthy()

    async def snapshot(self) -> dict[str, Any]:
        return self._host.snapshot()

    async def __call__(self, *_args: Any) -> dict[str, Any]:
        return self._host.snapshot()

    async def __del__(self) -> None:
        await self._host.stop()


def build_app(args: ServeAppArgs) -> serve.Application:
    """Typed Serve application builder: `import_path: recsys_ray.kafka.deployment:build_app`.

    Takes the same arguments as the ingestion application's builder
    (`ServeAppArgs`); `kafka.num_replicas` and `kafka.replica_cpus` size the deployment.
    """
    cfg = args.to_config()
    if not cfg.kafka.bootstrap_servers:
        raise ValueError("no Kafka brokers: set kafka.bootstrap_servers or RECSYS_KAFKA_BOOTSTRAP_SERVERS")
    topic_routes(cfg.kafka)
    return KafkaConsumerDeployment.options(
        num_replicas=cfg.kafka.num_replicas,
        ray_actor_options={"num_cpus": cfg.kafka.replica_cpus},
    ).bind(cfg)
