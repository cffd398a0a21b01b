from datetime import datetime, timezone

import pyarrow as pa
import pytest

from recsys_ray import schemas
from recsys_ray.config import ValidationConfig
from recsys_ray.validation import deduplicate_events, deduplicate_items, validate

CFG = ValidationConfig(max_timestamp=datetime(2030, 1, 1, tzinfo=timezone.utc))


def interactions(**columns):
    base = {
        "user_id": ["u1"],
        "item_id": ["i1"],
        "interaction_type": ["view"],
        "timestamp": ["2024-01-01T00:00:00Z"],
    }
    base.update(columns)
    return pa.table(base)


def reasons(table):
    result = validate(table, "interactions", CFG)
    return result, result.rejected.column("reason").to_pylist()


def test_valid_row_is_canonical():
    result, rejected = reasons(interactions(interaction_type=["  VIEW "], rating=["4.5"]))
    assert rejected == []
    assert result.valid.schema == schemas.INTERACTIONS
    row = result.valid.to_pylist()[0]
    assert row["interaction_type"] == "view"
    assert row["timestamp"] == datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert row["rating"] == 4.5
    assert row["event_id"].startswith("h") and len(row["event_id"]) == 17


@pytest.mark.parametrize(
    "column,value,reason",
    [
        ("user_id", None, "missing_field"),
        ("user_id", "", "missing_field"),
        ("item_id", "x" * 129, "id_too_long"),
        ("interaction_type", "share", "unknown_interaction_type"),
        ("timestamp", "not a time", "bad_timestamp"),
        ("timestamp", "1850-01-01T00:00:00Z", "timestamp_out_of_range"),
        ("timestamp", "2099-01-01T00:00:00Z", "timestamp_out_of_range"),
        ("rating", "9", "rating_out_of_range"),
        ("rating", "0.5", "rating_out_of_range"),
        ("rating", "abc", "bad_rating"),
        ("event_id", "e" * 200, "id_too_long"),
    ],
)
def test_reason_codes(column, value, reason):
    result, got = reasons(interactions(**{column: pa.array([value], pa.string())}))
    assert got == [reason]
    assert result.valid.num_rows == 0
    rejected = result.rejected.to_pylist()[0]
    assert rejected["field"] == column
    assert rejected["row"] == 0
    assert reason.split("_")[0] in rejected["reason"]
    assert '"user_id"' in rejected["original"]


def test_missing_required_column_rejects_every_row():
    table = pa.table({"user_id": ["a", "b"], "item_id": ["1", "2"], "timestamp": [1, 2]})
    result = validate(table, "interactions", CFG)
    assert result.rejected.column("reason").to_pylist() == ["missing_field"] * 2
    assert result.rejected.column("field").to_pylist() == ["interaction_type"] * 2


def test_timestamp_formats_mixed_in_one_column():
    table = interactions(
        user_id=["u"] * 5,
        item_id=["i"] * 5,
        interaction_type=["click"] * 5,
        timestamp=["2024-01-01T00:00:00Z", "1704067200", "1704067200000", "2024-01-01 00:00:00",
                   "2024-01-01T01:00:00+01:00"],
    )
    result = validate(table, "interactions", CFG)
    assert result.rejected.num_rows == 0
    expected = datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert set(result.valid.column("timestamp").to_pylist()) == {expected}


def test_numeric_and_native_timestamps():
    epoch = interactions(timestamp=pa.array([1704067200], pa.int64()))
    millis = interactions(timestamp=pa.array([1704067200000], pa.int64()))
    native = interactions(timestamp=pa.array([datetime(2024, 1, 1)], pa.timestamp("ms")))
    for table in (epoch, millis, native):
        result = validate(table, "interactions", CFG)
        assert result.valid.column("timestamp").to_pylist() == [datetime(2024, 1, 1, tzinfo=timezone.utc)]


def test_integer_ids_become_text_and_row_offset_applies():
    table = pa.table({"user_id": [7, None], "item_id": [9.0, 3.0], "interaction_type": ["like", "like"],
                      "timestamp": [1704067200, 1704067200]})
    result = validate(table, "interactions", CFG, source="upload-1", row_offset=100)
    assert result.valid.column("user_id").to_pylist() == ["7"]
    assert result.valid.column("item_id").to_pylist() == ["9"]
    assert result.rejected.column("row").to_pylist() == [101]
    assert result.rejected.column("source").to_pylist() == ["upload-1"]


def test_accounting_holds():
    table = interactions(
        user_id=["a", None, "c", "d"], item_id=["1", "2", "3", "4"],
        interaction_type=["view", "view", "nope", "view"], timestamp=["1704067200"] * 4,
    )
    result = validate(table, "interactions", CFG)
    assert result.valid.num_rows + result.rejected.num_rows == table.num_rows


def test_deduplicate_events_by_derived_and_explicit_ids():
    table = pa.table({
        "user_id": ["u", "u", "u", "u", "v"],
        "item_id": ["i", "i", "i", "j", "k"],
        "interaction_type": ["view"] * 5,
        "timestamp": ["1704067200"] * 5,
        "event_id": [None, None, "e1", "e1", "e2"],
    })
    valid = validate(table, "interactions", CFG).valid
    unique, dropped = deduplicate_events(valid)
    assert dropped == 2  # the repeated id-less event and the repeated explicit id
    assert unique.num_rows == 3
    # the kept row does not depend on input order
    again, _ = deduplicate_events(valid.take(pa.array([4, 3, 2, 1, 0])))
    assert again.equals(unique)


def test_items_validation_and_dedup():
    table = pa.table({
        "item_id": ["a", "b", "c", "a", None],
        "title": ["A", "", "C", "A2", "X"],
        "price": ["1.5", "2", "-1", "3", "1"],
        "category": ["x", None, "y", "z", "w"],
    })
    result = validate(table, "items", CFG)
    assert sorted(result.rejected.column("reason").to_pylist()) == [
        "missing_field", "missing_field", "price_out_of_range"]
    unique, dropped = deduplicate_items(result.valid)
    assert dropped == 1
    assert unique.to_pylist()[0]["title"] == "A2"  # the later row wins
    assert unique.schema == schemas.ITEMS
