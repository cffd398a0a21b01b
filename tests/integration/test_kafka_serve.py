"""The Kafka consumer as a Serve deployment (no HTTP), as deployed next to HTTP ingestion."""

from __future__ import annotations

import time

from tests.integration.kafka_broker import (  # noqa: F401 (kafka_broker is a fixture)
    FAST_GROUP,
    assert_exactly_once,
    kafka_broker,
    produce_events,
    unique,
)


def test_a_serve_replica_consumes_and_its_graceful_shutdown_lands_what_it_holds(kafka_broker, ray_session,
                                                                                 tmp_path):
    from ray import serve

    from recsys_ray.config import ServeAppArgs
    from recsys_ray.kafka.deployment import build_app
    from tests.integration.serve_support import serve_port

    serve_port()  # Serve's proxy on a free loopback port, shared with the other Serve tests
    topic, group, name = unique("serve.interactions"), unique("g"), unique("kafka")
    kafka_broker.create_topic(topic, 3)
    produced = produce_events(kafka_broker, topic, 3000)
    app = build_app(ServeAppArgs.model_validate({
        "storage.root": str(tmp_path),
        "kafka": {"bootstrap_servers": kafka_broker.bootstrap, "topics": topic, "group_id": group,
                  "default_tenant": "shop", "replica_cpus": 0.1, **FAST_GROUP,
                  # batches fall due only after ten minutes: what lands, the shutdown landed
                  "max_batch_seconds": 600},
    }))
    handle = serve.run(app, name=name, route_prefix=None)
    try:
        deadline = time.monotonic() + 120
        while True:
            snapshot = handle.snapshot.remote().result()
            assert snapshot["healthy"], snapshot
            if sum(p["buffered"] for p in snapshot["partitions"]) == 3000:
                break
            assert time.monotonic() < deadline, snapshot
            time.sleep(0.3)
        assert snapshot["batches"] == 0
        assert kafka_broker.committed(group, topic) == {0: None, 1: None, 2: None}
    finally:
        serve.delete(name)
    assert kafka_broker.committed(group, topic) == produced.end_offsets
    assert_exactly_once(str(tmp_path), produced)
