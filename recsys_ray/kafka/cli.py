"""`recsys-ray consume`: run the Kafka consumer on Ray until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from typing import Any

HELP = (
    "Consume JSON events from Kafka topics on Ray and land them in tenants' raw zones "
    "exactly once; runs until SIGTERM/SIGINT, then lands and commits what it holds."
)

log = logging.getLogger("recsys_ray.kafka")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap-servers", metavar="HOST:PORT[,...]",
                        help="Kafka brokers (or RECSYS_KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument("--topics", metavar="T[,T]",
                        help="topics to consume (default recsys.interactions); a topic's dataset is "
                             "the last word of its name (interactions|items) unless --topic-dataset says")
    parser.add_argument("--root", metavar="URI", help="storage root, a path or s3://bucket/prefix")
    parser.add_argument("--group", help="consumer group id (default recsys-ray)")
    parser.add_argument("--tenant", help="default tenant: messages without tenant_id land here, and "
                                         "dead letters that name no valid tenant")
    parser.add_argument("--topic-tenant", action="append", metavar="TOPIC=TENANT",
                        help="every message of TOPIC belongs to TENANT (repeatable)")
    parser.add_argument("--topic-dataset", action="append", metavar="TOPIC=DATASET",
                        help="TOPIC carries DATASET, interactions or items (repeatable)")
    parser.add_argument("--allowed-tenants", metavar="T[,T]",
                        help="only these tenant_id values are accepted; others go to the dead letters")
    parser.add_argument("--max-batch-records", type=int, metavar="N",
                        help="land a partition's batch at N records (default 50000)")
    parser.add_argument("--max-batch-seconds", type=float, metavar="S",
                        help="... or when its oldest record has waited S seconds (default 5)")
    parser.add_argument("--replicas", type=int, metavar="N", help="consumer actors in the group (default 1)")
    parser.add_argument("--replica-cpus", type=float, help="CPUs reserved per consumer actor (default 0.25)")
    parser.add_argument("--config", metavar="FILE.yaml", help="configuration file (flags override it)")
    parser.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, or the cluster "
                                          "started with `ray start`, else a new local one)")
    parser.add_argument("--max-restarts", type=int, default=-1,
                        help="restarts Ray grants each consumer actor (default -1: unlimited)")
    parser.add_argument("--health-period", type=float, default=5.0, metavar="S",
                        help="seconds between health checks (default 5)")


def _pairs(values: list[str] | None, what: str) -> dict[str, str] | None:
    if not values:
        return None
    out = {}
    for value in values:
        key, sep, target = value.partition("=")
        if not sep or not key or not target:
            raise ValueError(f"{what} must look like TOPIC=VALUE, got {value!r}")
        out[key.strip()] = target.strip()
    return out


def config_from_args(args: argparse.Namespace):
    from recsys_ray.config import RecsysConfig

    return RecsysConfig.load(
        args.config,
        storage={"root": args.root},
        kafka={
            "bootstrap_servers": args.bootstrap_servers,
            "topics": args.topics,
            "group_id": args.group,
            "default_tenant": args.tenant,
            "topic_tenants": _pairs(args.topic_tenant, "--topic-tenant"),
            "topic_datasets": _pairs(args.topic_dataset, "--topic-dataset"),
            "allowed_tenants": args.allowed_tenants,
            "max_batch_records": args.max_batch_records,
            "max_batch_seconds": args.max_batch_seconds,
            "num_replicas": args.replicas,
            "replica_cpus": args.replica_cpus,
        },
    )


def _print_status(statuses: list[dict[str, Any]]) -> None:
    for status in statuses:
        lag = sum(p["lag"] or 0 for p in status["partitions"])
        log.info("%s: %s landed=%d rejected=%d batches=%d partitions=%d lag=%d",
                 status["member"], "healthy" if status["healthy"] else f"UNHEALTHY ({status['reason']})",
                 status["landed"], status["rejected"], status["batches"], len(status["partitions"]), lag)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pydantic import ValidationError

    from recsys_ray.kafka.messages import topic_routes

    try:
        cfg = config_from_args(args)
        if not cfg.kafka.bootstrap_servers:
            raise ValueError("no Kafka brokers: give --bootstrap-servers or set RECSYS_KAFKA_BOOTSTRAP_SERVERS")
        topic_routes(cfg.kafka)
    except (ValueError, ValidationError) as exc:
        print(f"recsys-ray consume: {exc}", file=sys.stderr)
        return 2

    import ray

    from recsys_ray.kafka.actor import start_consumers, stop_consumers, supervise

    stop = threading.Event()

    def request_stop(signum, _frame):
        if stop.is_set():
            raise KeyboardInterrupt  # a second signal: stop now
        log.info("%s received: landing and committing what is buffered", signal.Signals(signum).name)
        stop.set()

    ray.init(address=args.address)
    # After ray.init, which installs handlers of its own.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    actors = start_consumers(cfg, max_restarts=args.max_restarts)
    topics = ", ".join(cfg.kafka.topics)
    log.info("consuming %s as group %s with %d consumer(s) into %s", topics, cfg.kafka.group_id,
             len(actors), cfg.storage.root)
    code = supervise(actors, stop, args.health_period, on_status=_print_status)
    results = stop_consumers(actors)
    print(json.dumps({"consumers": results}, default=str))
    return code
