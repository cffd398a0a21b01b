"""`recsys-ray consume`: run the Kafka consumer on Ray until SIGTERM/SIGINT.

On the first signal every consumer lands and commits what it holds and leaves
the group; then the command exits as stopped by that signal (status 143 for
SIGTERM). A second signal stops it at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
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
    parser.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a new local "
                                          "Ray of its own)")
    parser.add_argument("--max-restarts", type=int, default=-1,
                        help="restarts Ray grants each consumer actor (default -1: unlimited)")
    parser.add_argument("--health-period", type=float, default=5.0, metavar="S",
                        help="seconds between health checks (default 5)")


# The config key each flag sets (flag values are read from the parsed arguments).
FLAGS = {
    "storage.root": "--root",
    "kafka.bootstrap_servers": "--bootstrap-servers",
    "kafka.topics": "--topics",
    "kafka.group_id": "--group",
    "kafka.default_tenant": "--tenant",
    "kafka.allowed_tenants": "--allowed-tenants",
    "kafka.max_batch_records": "--max-batch-records",
    "kafka.max_batch_seconds": "--max-batch-seconds",
    "kafka.num_replicas": "--replicas",
    "kafka.replica_cpus": "--replica-cpus",
}


def _pairs(values: list[str] | None, flag: str) -> dict[str, str] | None:
    from recsys_ray.cli import UsageError

    if not values:
        return None
    out = {}
    for value in values:
        key, sep, target = value.partition("=")
        if not sep or not key or not target:
            raise UsageError(f"{flag} must look like TOPIC=VALUE, got {value!r}")
        out[key.strip()] = target.strip()
    return out


def config_from_args(args: argparse.Namespace):
    """The command's RecsysConfig; a bad flag or file raises `recsys_ray.cli.UsageError`."""
    from recsys_ray.cli import UsageError, load_config
    from recsys_ray.kafka.messages import topic_routes

    cfg = load_config(args, FLAGS, kafka={"topic_tenants": _pairs(args.topic_tenant, "--topic-tenant"),
                                          "topic_datasets": _pairs(args.topic_dataset, "--topic-dataset")})
    if not cfg.kafka.bootstrap_servers:
        raise UsageError("no Kafka brokers: give --bootstrap-servers or set RECSYS_KAFKA_BOOTSTRAP_SERVERS")
    try:
        topic_routes(cfg.kafka)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return cfg


def _print_status(statuses: list[dict[str, Any]]) -> None:
    for status in statuses:
        lag = sum(p["lag"] or 0 for p in status["partitions"])
        log.info("%s: %s landed=%d rejected=%d batches=%d partitions=%d lag=%d",
                 status["member"], "healthy" if status["healthy"] else f"UNHEALTHY ({status['reason']})",
                 status["landed"], status["rejected"], status["batches"], len(status["partitions"]), lag)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)

    from recsys_ray.cli import Stopped
    from recsys_ray.kafka.actor import start_consumers, stop_consumers, supervise
    from recsys_ray.runtime import FOR_SERVICE, ensure_ray

    stop = threading.Event()
    stopped_by: list[int] = []

    def request_stop(signum, _frame):
        if stop.is_set():
            raise Stopped(signum)  # a second signal: stop now
        log.info("%s received: landing and committing what is buffered", signal.Signals(signum).name)
        stopped_by.append(signum)
        stop.set()

    ensure_ray(args.address, profile=FOR_SERVICE)
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    actors = start_consumers(cfg, max_restarts=args.max_restarts)
    topics = ", ".join(cfg.kafka.topics)
    log.info("consuming %s as group %s with %d consumer(s) into %s", topics, cfg.kafka.group_id,
             len(actors), cfg.storage.root)
    code = supervise(actors, stop, args.health_period, on_status=_print_status)
    results = stop_consumers(actors)
    print(json.dumps({"consumers": results}, default=str), flush=True)
    if code == 0 and stopped_by:
        raise Stopped(stopped_by[0])  # everything landed and committed: exit as stopped by the signal
    return code
