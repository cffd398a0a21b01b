"""The consumer on Ray: one async actor per consumer-group member.

Each `KafkaConsumerActor` hosts one consumer-group member (`KafkaLoopHost`) on
its event loop; landing runs in the actor's worker threads. Actors are created with `max_restarts`, so
when one's process dies (a node lost, SIGKILL, `ray.kill(..., no_restart=False)`)
Ray starts it again with the same config and it resumes from the group's
committed offsets and the batch ledger. `supervise` watches their health and
restarts an actor whose loop died or whose broker stayed unreachable;
`stop_consumers` stops them gracefully (land, commit, leave the group).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from recsys_ray.config import RecsysConfig
from recsys_ray.kafka.host import KafkaLoopHost

log = logging.getLogger(__name__)


@ray.remote
class KafkaConsumerActor:
    """One consumer-group member running on Ray (see module docstring)."""

    async def __init__(self, cfg: RecsysConfig, member: str) -> None:
        logging.basicConfig(level=logging.INFO)
        self._host = KafkaLoopHost(cfg, member)

    async def health(self) -> dict[str, Any]:
        return self._host.health()

    async def snapshot(self) -> dict[str, Any]:
        return self._host.snapshot()

    async def stop(self) -> dict[str, Any]:
        """Land and commit what is buffered, leave the group; returns the final snapshot."""
        return await self._host.stop()


def start_consumers(cfg: RecsysConfig, *, max_restarts: int = -1) -> list[ray.actor.ActorHandle]:
    """Start `cfg.kafka.num_replicas` consumer actors in one group on the current Ray cluster."""
    kafka = cfg.kafka
    return [
        KafkaConsumerActor.options(
            num_cpus=kafka.replica_cpus,
            max_restarts=max_restarts,
            max_task_retries=0,
        ).remote(cfg, f"{kafka.group_id}-{index}")
        for index in range(kafka.num_replicas)
    ]


def supervise(actors: list[ray.actor.ActorHandle], stop: threading.Event, period_s: float = 5.0,
              on_status=None, give_up_after: int = 12) -> int:
    """Watch the consumers until `stop` is set; returns 0, or 1 if one is gone for good.

    An actor whose health check fails is killed with `no_restart=False`, so Ray
    starts it again within its `max_restarts`. An actor that cannot be reached
    for `give_up_after` periods in a row, or whose constructor failed, is gone.
    """
    unreachable = [0] * len(actors)
    while not stop.wait(period_s):
        statuses = []
        # Ask every actor at once, so one that cannot answer does not delay the others' checks.
        pending = [actor.snapshot.remote() for actor in actors]
        deadline = time.monotonic() + max(30.0, period_s)
        for index, actor in enumerate(actors):
            try:
                status = ray.get(pending[index], timeout=max(0.0, deadline - time.monotonic()))
            except (RayActorError, GetTimeoutError) as exc:
                if getattr(exc, "actor_init_failed", False):
                    log.error("a Kafka consumer actor could not start: %s", exc)
                    return 1
                unreachable[index] += 1
                if unreachable[index] >= give_up_after:
                    log.error("a Kafka consumer actor has been unreachable for %d checks: %s",
                              unreachable[index], exc)
                    return 1
                continue  # restarting, or busy starting up
            unreachable[index] = 0
            statuses.append(status)
            if not status["healthy"]:
                log.warning("consumer %s unhealthy (%s); restarting it", status["member"], status["reason"])
                ray.kill(actor, no_restart=False)
        if on_status is not None:
            on_status(statuses)
    return 0


def stop_consumers(actors: list[ray.actor.ActorHandle], timeout_s: float = 300.0) -> list[dict[str, Any]]:
    """Stop every consumer gracefully (land, commit, leave the group), then end the actors."""
    refs = [actor.stop.remote() for actor in actors]
    results: list[dict[str, Any]] = []
    for actor, ref in zip(actors, refs):
        try:
            results.append(ray.get(ref, timeout=timeout_s))
        except (RayActorError, GetTimeoutError) as exc:
            log.error("a Kafka consumer did not stop cleanly: %s", exc)
        ray.kill(actor, no_restart=True)
    return results
