import json
from datetime import datetime, timezone

import pyarrow as pa

from recsys_ray import schemas, validation
from recsys_ray.config import ValidationConfig
from recsys_ray.stages import batch

CFG = ValidationConfig()

INTERACTIONS = pa.table({
    "user_id": ["u1", "", "u3", "u4", "u5", "u6", "u7"],
    "item_id": ["i1", "i2", "i3", "i4", "i5", "i6", "i7"],
    "interaction_type": ["view", "click", "dance", "purchase", "like", " VIEW ", "like"],
    "timestamp": ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z", "nope",
                  "2024-01-05T00:00:00Z", "2024-01-06T00:00:00Z", "1960-01-01T00:00:00Z"],
    "rating": [None, None, None, None, "9", "4", None],
})
EXPECTED_REJECTS = [
    (1, "missing_field", "user_id"),
    (2, "unknown_interaction_type", "interaction_type"),
    (3, "bad_timestamp", "timestamp"),
    (4, "rating_out_of_range", "rating"),
    (6, "timestamp_out_of_range", "timestamp"),
]


def test_combined_schema():
    schema = batch.combined_schema("interactions")
    assert schema.names == schemas.INTERACTIONS.names + ["q_" + n for n in schemas.QUARANTINE.names]
    assert all(field.nullable for field in schema)
    assert schema.field("timestamp").type == schemas.TIMESTAMP
    assert schema.field("q_row").type == pa.int64()


def test_validate_table_batch_round_trip():
    combined = batch.validate_table_batch(INTERACTIONS, "interactions", CFG)
    assert combined.schema == batch.combined_schema("interactions")
    assert combined.num_rows == INTERACTIONS.num_rows

    valid = batch.valid_rows(combined, "interactions")
    rejected = batch.rejected_rows(combined)
    assert valid.num_rows + rejected.num_rows == INTERACTIONS.num_rows
    assert valid.schema == schemas.INTERACTIONS
    assert rejected.schema == schemas.QUARANTINE

    assert valid.column("user_id").to_pylist() == ["u1", "u6"]
    assert valid.column("interaction_type").to_pylist() == ["view", "view"]
    assert valid.column("timestamp").to_pylist() == [datetime(2024, 1, 1, tzinfo=timezone.utc),
                                                     datetime(2024, 1, 6, tzinfo=timezone.utc)]
    assert valid.column("rating").to_pylist() == [None, 4.0]
    direct = validation.validate(INTERACTIONS, "interactions", CFG)
    assert valid.equals(direct.valid)

    assert list(zip(rejected["row"].to_pylist(), rejected["reason"].to_pylist(),
                    rejected["field"].to_pylist())) == EXPECTED_REJECTS
    assert set(rejected["dataset"].to_pylist()) == {"interactions"}
    assert rejected["source"].to_pylist() == [None] * 5
    assert json.loads(rejected["original"][3].as_py()) == INTERACTIONS.slice(4, 1).to_pylist()[0]
    stable = ["dataset", "source", "row", "reason", "field", "original"]
    assert rejected.select(stable).equals(direct.rejected.select(stable))
    assert rejected["message"][0].as_py() == "user_id is required and missing or empty"


def test_validation_summary_counts():
    combined = batch.validate_table_batch(INTERACTIONS, "interactions", CFG)
    summary = batch.validation_summary(combined)
    assert summary.schema == pa.schema([("reason", pa.string()), ("count", pa.int64())])
    counts = dict(zip(summary["reason"].to_pylist(), summary["count"].to_pylist()))
    assert summary["reason"][0].as_py() == "valid"
    assert counts == {"valid": 2, "missing_field": 1, "unknown_interaction_type": 1, "bad_timestamp": 1,
                      "rating_out_of_range": 1, "timestamp_out_of_range": 1}
    assert sum(counts.values()) == INTERACTIONS.num_rows


def test_validate_table_batch_names_the_source_and_numbers_rows_within_it():
    combined = batch.validate_table_batch(INTERACTIONS, "interactions", CFG, source="a.parquet", row_offset=100)
    assert combined.schema == batch.combined_schema("interactions")
    valid = batch.valid_rows(combined, "interactions")
    rejected = batch.rejected_rows(combined)
    assert valid.num_rows + rejected.num_rows == INTERACTIONS.num_rows
    assert sorted(valid["user_id"].to_pylist()) == ["u1", "u6"]
    assert list(zip(rejected["source"].to_pylist(), rejected["row"].to_pylist(), rejected["reason"].to_pylist())) == [
        ("a.parquet", 100 + row, reason) for row, reason, _ in EXPECTED_REJECTS]
    counts = dict(zip(*batch.validation_summary(combined).to_pydict().values()))
    assert counts["valid"] == 2 and sum(counts.values()) == 7


def test_items_round_trip():
    items = pa.table({
        "item_id": ["a", "b", "", "d"],
        "title": ["A", "  ", "C", "D"],
        "price": ["1.5", None, "2", "-1"],
        "category": ["x", None, "y", ""],
    })
    combined = batch.validate_table_batch(items, "items", CFG)
    valid = batch.valid_rows(combined, "items")
    rejected = batch.rejected_rows(combined)
    assert valid.schema == schemas.ITEMS
    assert valid.to_pylist() == [{"item_id": "a", "title": "A", "category": "x", "brand": None, "price": 1.5,
                                  "description": None}]
    assert list(zip(rejected["row"].to_pylist(), rejected["reason"].to_pylist())) == [
        (1, "missing_field"), (2, "missing_field"), (3, "price_out_of_range")]
    assert set(rejected["dataset"].to_pylist()) == {"items"}
    counts = dict(zip(*batch.validation_summary(combined).to_pydict().values()))
    assert counts == {"valid": 1, "missing_field": 2, "price_out_of_range": 1}


def test_all_valid_and_empty_batches():
    good = INTERACTIONS.take([0, 5])
    combined = batch.validate_table_batch(good, "interactions", CFG)
    assert batch.valid_rows(combined, "interactions").num_rows == 2
    assert batch.rejected_rows(combined).num_rows == 0
    assert batch.rejected_rows(combined).schema == schemas.QUARANTINE
    assert batch.validation_summary(combined).to_pylist() == [{"reason": "valid", "count": 2}]

    empty = batch.validate_table_batch(INTERACTIONS.slice(0, 0), "interactions", CFG)
    assert empty.schema == batch.combined_schema("interactions")
    assert empty.num_rows == 0
    assert batch.validation_summary(empty).to_pylist() == [{"reason": "valid", "count": 0}]


def test_all_rejected_batch():
    bad = INTERACTIONS.take([1, 2])
    combined = batch.validate_table_batch(bad, "interactions", CFG)
    assert batch.valid_rows(combined, "interactions").num_rows == 0
    assert batch.valid_rows(combined, "interactions").schema == schemas.INTERACTIONS
    assert batch.rejected_rows(combined)["reason"].to_pylist() == ["missing_field", "unknown_interaction_type"]
    summary = batch.validation_summary(combined)
    assert dict(zip(summary["reason"].to_pylist(), summary["count"].to_pylist())) == {
        "valid": 0, "missing_field": 1, "unknown_interaction_type": 1}
