import json
import subprocess
import sys
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from recsys_ray import schemas
from recsys_ray.config import KafkaConfig, ValidationConfig
from recsys_ray.ingest import prepare_batch
from recsys_ray.io import formats, layout
from recsys_ray.kafka.messages import (
    PartitionBatch,
    TopicRoute,
    dataset_for_topic,
    decode_payloads,
    object_name,
    payload_text,
    prepare_partition_batch,
    topic_routes,
)

CFG = ValidationConfig(max_timestamp=datetime(2030, 1, 1, tzinfo=timezone.utc))
TOPIC = "recsys.interactions"
ROUTE = TopicRoute(TOPIC, "interactions", tenant=None, default_tenant="shop")


def event(**fields):
    base = {"user_id": "u1", "item_id": "i1", "interaction_type": "click", "timestamp": 1_700_000_000}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def batch(values, first_offset=100, topic=TOPIC, partition=2):
    offsets = list(range(first_offset, first_offset + len(values)))
    return PartitionBatch(topic, partition, offsets, values, offsets[0], offsets[-1])


def landed_rows(prepared):
    return {tenant: p.valid.to_pylist() for tenant, p in prepared.items()}


def rejected_rows(prepared):
    return [row for p in prepared.values() for row in p.rejected.to_pylist()]


# ---- decoding ------------------------------------------------------------------------


def test_valid_messages_decode_in_one_go():
    decoded = decode_payloads([event(), event(user_id="u2", tenant_id="acme")], "interactions")
    assert decoded.failed == []
    assert decoded.index.tolist() == [0, 1]
    assert decoded.table.column("user_id").to_pylist() == ["u1", "u2"]
    assert decoded.tenant_ids.to_pylist() == [None, "acme"]


def test_each_bad_message_is_named_and_the_good_ones_still_decode():
    values = [event(), b"not json", b"[1, 2]", b"\xff\xfe{}", None, b"   ", b'{"a": 1} {"a": 2}', b"null",
              event(user_id="u9")]
    decoded = decode_payloads(values, "interactions")
    assert [(position, reason) for position, reason, _ in decoded.failed] == [
        (1, "invalid_json"), (2, "expected_object"), (3, "invalid_utf8"), (4, "invalid_json"),
        (5, "invalid_json"), (6, "invalid_json"), (7, "expected_object"),
    ]
    assert decoded.index.tolist() == [0, 8]
    assert decoded.table.column("user_id").to_pylist() == ["u1", "u9"]


def test_a_lone_surrogate_escape_is_a_dead_letter_and_the_batch_still_lands():
    values = [event(), b'{"user_id": "u\\ud800", "item_id": "i1", "interaction_type": "view", "timestamp": 1}',
              event(user_id="u\U0001f600")]  # json.dumps escapes it as a surrogate pair
    decoded = decode_payloads(values, "interactions")
    assert [(position, reason) for position, reason, _ in decoded.failed] == [(1, "invalid_utf8")]
    assert decoded.table.column("user_id").to_pylist() == ["u1", "u\U0001f600"]


def test_deeply_nested_messages_are_dead_letters_and_the_others_land():
    # Arrow's JSON reader segfaulted on the first payload, so the batch is decoded in a child process.
    program = (
        "import json\n"
        "from recsys_ray.kafka.messages import decode_payloads\n"
        "good = json.dumps({'user_id': 'u1', 'item_id': 'i1', 'interaction_type': 'click', 'timestamp': 1}).encode()\n"
        "values = [good, b'{\"a\":' + b'[' * 20000 + b']' * 20000 + b'}', b'[' * 100000,\n"
        "          b'{\"a\": ' + b'[' * 40 + b']' * 40 + b'}', good]\n"
        "decoded = decode_payloads(values, 'interactions')\n"
        "print(json.dumps([[p, r] for p, r, _ in decoded.failed]), decoded.index.tolist())\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '[[1, "invalid_json"], [2, "invalid_json"], [3, "invalid_json"]] [0, 4]'


@pytest.mark.parametrize("values, reasons", [
    ([b"null", b'{"user_id": "u1"}'], [(0, "expected_object")]),
    ([b"[1]", b"[2]"], [(0, "expected_object"), (1, "expected_object")]),
    ([b"7"], [(0, "expected_object")]),
    ([b"{}", b"{}"], []),
    ([b'{"a": 1}', b""], [(1, "invalid_json")]),
])
def test_one_message_is_one_json_object(values, reasons):
    decoded = decode_payloads(values, "interactions")
    assert [(position, reason) for position, reason, _ in decoded.failed] == reasons
    assert decoded.table.num_rows == len(values) - len(reasons) == len(decoded.index)


def test_ids_that_look_like_dates_stay_text():
    decoded = decode_payloads([event(user_id="2024-01-01", item_id="2024-01-02 10:00:00")], "interactions")
    assert decoded.table.column("user_id").to_pylist() == ["2024-01-01"]
    assert decoded.table.column("item_id").to_pylist() == ["2024-01-02 10:00:00"]


def test_a_pretty_printed_message_is_one_event():
    pretty = json.dumps({"user_id": "u1", "item_id": "i1", "interaction_type": "view",
                         "timestamp": "2024-01-01T00:00:00Z"}, indent=2).encode()
    decoded = decode_payloads([pretty, event()], "interactions")
    assert decoded.failed == [] and decoded.table.num_rows == 2


def test_non_string_tenant_is_flagged_on_both_paths():
    fast = decode_payloads([event(tenant_id=7)], "interactions")
    careful = decode_payloads([event(tenant_id=7), b"oops"], "interactions")
    assert fast.tenant_not_text.tolist() == [True]
    assert careful.tenant_not_text.tolist() == [True]


# ---- event identity ------------------------------------------------------------------


def test_events_without_id_get_the_id_every_other_channel_derives_and_explicit_ids_are_kept():
    records = [json.loads(event()), json.loads(event(user_id="u2", event_id="e-1")),
               json.loads(event(user_id="u3", event_id="  "))]
    prepared = prepare_partition_batch(batch([json.dumps(r).encode() for r in records]), ROUTE, CFG)
    over_http = prepare_batch(formats.records_to_table(records, "interactions"), "interactions", CFG)
    ids = sorted(row["event_id"] for row in landed_rows(prepared)["shop"])
    assert ids == sorted(over_http.valid.column("event_id").to_pylist())
    assert "e-1" in ids and not any(i.startswith("kafka:") for i in ids)


def test_a_producer_retry_at_another_offset_is_the_same_event():
    retried = prepare_partition_batch(batch([event(), event(), event(user_id="u2")]), ROUTE, CFG)
    assert len(landed_rows(retried)["shop"]) == 2 and retried["shop"].duplicates == 1
    elsewhere = prepare_partition_batch(batch([event()], first_offset=7_000, topic="t" * 200, partition=0),
                                        TopicRoute("t" * 200, "interactions", None, "shop"), CFG)
    assert landed_rows(elsewhere)["shop"][0] in landed_rows(retried)["shop"]


def test_the_same_batch_prepares_to_the_same_rows():
    values = [event(user_id=f"u{i}", tenant_id=["a", "b", None][i % 3]) for i in range(30)] + [b"bad"]
    one = prepare_partition_batch(batch(values), ROUTE, CFG)
    two = prepare_partition_batch(batch(values), ROUTE, CFG)
    assert landed_rows(one) == landed_rows(two)
    assert rejected_rows(one) == rejected_rows(two)


def test_fast_and_careful_decoding_land_the_same_rows():
    good = [event(user_id=f"u{i}", rating=4.5, timestamp="2024-01-01T00:00:00+02:00") for i in range(5)]
    clean = prepare_partition_batch(batch(good), ROUTE, CFG)
    with_bad = prepare_partition_batch(batch(good + [b"{broken"]), ROUTE, CFG)
    assert landed_rows(clean) == landed_rows(with_bad)
    assert landed_rows(clean)["shop"][0]["timestamp"] == datetime(2023, 12, 31, 22, tzinfo=timezone.utc)


# ---- tenants -------------------------------------------------------------------------


def test_tenant_from_the_message_else_the_default():
    prepared = prepare_partition_batch(batch([event(tenant_id="acme"), event(), event(user_id="u2", tenant_id=" ")]),
                                       ROUTE, CFG)
    assert sorted(prepared) == ["acme", "shop"]
    assert len(prepared["acme"].valid) == 1 and len(prepared["shop"].valid) == 2


@pytest.mark.parametrize("tenant_id, reason", [("../etc", "invalid_tenant"), (7, "invalid_tenant"),
                                               ("x" * 300, "invalid_tenant")])
def test_a_message_naming_no_valid_tenant_is_a_dead_letter_of_the_default_tenant(tenant_id, reason):
    prepared = prepare_partition_batch(batch([event(tenant_id=tenant_id), event()]), ROUTE, CFG)
    assert sorted(prepared) == ["shop"]
    (letter,) = prepared["shop"].rejected.to_pylist()
    assert (letter["reason"], letter["field"], letter["row"]) == (reason, "tenant_id", 100)


def test_allowed_tenants_keep_out_the_others():
    route = TopicRoute(TOPIC, "interactions", None, "shop", frozenset({"shop", "acme"}))
    prepared = prepare_partition_batch(batch([event(tenant_id="acme"), event(tenant_id="evil")]), route, CFG)
    assert len(prepared["acme"].valid) == 1
    assert prepared["shop"].rejected.column("reason").to_pylist() == ["unknown_tenant"]


def test_a_topic_of_one_tenant_refuses_messages_claiming_another():
    route = TopicRoute(TOPIC, "interactions", tenant="acme", default_tenant=None)
    prepared = prepare_partition_batch(batch([event(tenant_id="acme"), event(tenant_id="other"), event(user_id="u2")]),
                                       route, CFG)
    assert sorted(prepared) == ["acme"]
    assert len(prepared["acme"].valid) == 2
    assert prepared["acme"].rejected.column("reason").to_pylist() == ["tenant_mismatch"]


# ---- dead letters --------------------------------------------------------------------


def test_dead_letters_keep_coordinates_reason_and_raw_payload():
    bad_type = event(interaction_type="teleport", tenant_id="acme")
    values = [event(), b"not json", bad_type, b"\xff\x00"]
    prepared = prepare_partition_batch(batch(values), ROUTE, CFG)
    letters = {row["row"]: row for row in rejected_rows(prepared)}
    assert set(letters) == {101, 102, 103}
    assert letters[101]["reason"] == "invalid_json" and letters[101]["original"] == "not json"
    assert letters[101]["source"] == f"kafka:{TOPIC}:2:101"
    # a schema violation lands in its tenant's quarantine with the message as sent
    assert prepared["acme"].rejected.to_pylist()[0]["original"] == bad_type.decode()
    assert letters[102]["reason"] == "unknown_interaction_type"
    assert letters[103]["reason"] == "invalid_utf8" and letters[103]["original"] == "base64:/wA="
    for p in prepared.values():
        assert p.rejected.schema == schemas.QUARANTINE


def test_payload_text():
    assert payload_text(b'{"a": 1}') == '{"a": 1}'
    assert payload_text(None) == ""
    assert payload_text(b"\xff") == "base64:/w=="


def test_items_topic_lands_catalog_rows():
    route = TopicRoute("recsys.items", "items", None, "shop")
    values = [json.dumps({"item_id": "i1", "title": "Lamp", "price": 10}).encode(),
              json.dumps({"item_id": "i2"}).encode()]
    prepared = prepare_partition_batch(batch(values, topic="recsys.items"), route, CFG)
    assert prepared["shop"].valid.schema == schemas.ITEMS
    assert prepared["shop"].valid.column("item_id").to_pylist() == ["i1"]
    assert prepared["shop"].rejected.column("reason").to_pylist() == ["missing_field"]


# ---- routes and names ----------------------------------------------------------------


def test_dataset_comes_from_the_config_or_the_topic_name():
    assert dataset_for_topic("shop.items", {}) == "items"
    assert dataset_for_topic("events-interactions", {}) == "interactions"
    assert dataset_for_topic("clicks", {"clicks": "interactions"}) == "interactions"
    with pytest.raises(ValueError, match="topic_datasets"):
        dataset_for_topic("clicks", {})


def test_every_topic_needs_a_tenant():
    with pytest.raises(ValueError, match="default"):
        topic_routes(KafkaConfig(topics=("recsys.interactions",)))
    routes = topic_routes(KafkaConfig(topics="a.items,b.interactions", topic_tenants={"a.items": "acme"},
                                      default_tenant="shop"))
    assert routes["a.items"].dead_letter_tenant == "acme"
    assert routes["b.interactions"].dead_letter_tenant == "shop"
    with pytest.raises(ValueError, match="allowed"):
        topic_routes(KafkaConfig(topics="a.items", default_tenant="shop", allowed_tenants="acme"))


def test_object_names_are_deterministic_and_safe():
    name = object_name("recsys.interactions", 2, 100, 199)
    assert name == "kafka-recsys.interactions-2-0000000000000000100-0000000000000000199"
    assert layout.check_name(name)
    long_name = object_name("t" * 249, 0, 0, 1)
    assert layout.check_name(long_name) and long_name == object_name("t" * 249, 0, 0, 1)
    assert layout.check_name(object_name("a..b", 0, 0, 1))


def test_empty_table_shapes():
    prepared = prepare_partition_batch(batch([b"x"]), ROUTE, CFG)
    assert prepared["shop"].valid.schema == schemas.INTERACTIONS and prepared["shop"].valid.num_rows == 0
    assert isinstance(prepared["shop"].rejected, pa.Table)
