import json
import os
from datetime import datetime, timezone

import pyarrow.parquet as pq

from recsys_ray.config import RecsysConfig
from recsys_ray.io import storage
from recsys_ray.kafka import ledger
from recsys_ray.kafka.landing import land_partition_batch
from recsys_ray.kafka.messages import PartitionBatch, TopicRoute

TOPIC = "recsys.interactions"
ROUTE = TopicRoute(TOPIC, "interactions", tenant=None, default_tenant="shop")


def config(root):
    return RecsysConfig(storage={"root": str(root)},
                        validation={"max_timestamp": datetime(2030, 1, 1, tzinfo=timezone.utc)})


def messages(count, start=0):
    values = []
    for i in range(start, start + count):
        record = {"user_id": f"u{i}", "item_id": "i1", "interaction_type": "view", "timestamp": 1_700_000_000 + i}
        if i % 2:
            record["tenant_id"] = "acme"
        values.append(json.dumps(record).encode())
    values.append(b"garbage")
    return values


def partition_batch(values, first=10):
    offsets = list(range(first, first + len(values)))
    return PartitionBatch(TOPIC, 1, offsets, values, offsets[0], offsets[-1])


def test_ledger_round_trip(tmp_path):
    uri = ledger.ledger_uri(str(tmp_path), "my group/1", TOPIC, 3)
    assert ledger.read_range(uri) is None
    ledger.write_range(uri, ledger.BatchRange(5, 9))
    assert ledger.read_range(uri) == ledger.BatchRange(5, 9)
    assert "/_kafka/" in uri and "my group" not in uri  # hashed into one safe segment
    assert storage.list_files(str(tmp_path)) == []  # hidden from data listings


def test_a_batch_lands_one_object_per_tenant_and_records_its_range(tmp_path):
    cfg = config(tmp_path)
    landed = land_partition_batch(partition_batch(messages(10)), ROUTE, cfg, "g")
    name = "kafka-recsys.interactions-1-0000000000000000010-0000000000000000020.parquet"
    assert sorted(os.path.relpath(o, tmp_path) for o in landed.objects) == [
        f"tenants/acme/raw/interactions/{name}",
        f"tenants/shop/quarantine/interactions/{name}",
        f"tenants/shop/raw/interactions/{name}",
    ]
    assert landed.landed == {"acme": 5, "shop": 5}
    assert landed.rejected == {"invalid_json": 1}
    assert landed.next_offset == 21
    assert ledger.read_range(ledger.ledger_uri(str(tmp_path), "g", TOPIC, 1)) == ledger.BatchRange(10, 20)


def test_landing_the_same_batch_again_replaces_its_objects(tmp_path):
    cfg = config(tmp_path)
    first = land_partition_batch(partition_batch(messages(10)), ROUTE, cfg, "g")
    again = land_partition_batch(partition_batch(messages(10)), ROUTE, cfg, "g")
    assert first.objects == again.objects
    files = storage.list_files(str(tmp_path / "tenants"))
    assert len(files) == 3
    rows = sum(pq.read_table(f.uri).num_rows for f in files if "/raw/" in f.uri)
    assert rows == 10
