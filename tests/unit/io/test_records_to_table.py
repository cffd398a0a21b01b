"""`records_to_table` converts the usual text fields in one pass; the result must be
exactly the column-by-column conversion (what `dataset=None` does for every key)."""

import pytest

from recsys_ray import schemas
from recsys_ray.io import formats


def column_by_column(records, dataset):
    table = formats.records_to_table(records, None)  # no dataset: every key the per-column way
    return table.select([name for name in schemas.schema_for(dataset).names if name in table.column_names])


def event(**overrides):
    base = {"user_id": "u1", "item_id": "i1", "interaction_type": "click", "timestamp": "2024-05-01T10:00:00Z"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


CASES = {
    "all text": [event(event_id="e1", rating=4), event(event_id="e2", rating=None)],
    "integer ids": [event(user_id=7), event(user_id=8)],
    "an integer among text ids": [event(item_id="i1"), event(item_id=12)],
    "a float id": [event(item_id=12.0)],
    "a boolean": [event(interaction_type=True)],
    "an object": [event(user_id={"id": 1})],
    "a list": [event(event_id=["a"])],
    "missing keys": [event(item_id=...), event(user_id=...)],
    "a key only null": [event(event_id=None), event(event_id=None)],
    "a key nowhere": [event(), event()],
    "extra keys": [event(extra=1, tenant="x"), event(nested={"a": [1, 2]})],
    "epoch timestamps": [event(timestamp=1714557600), event(timestamp="2024-05-01T10:00:00Z")],
    "unicode": [event(user_id="ünï", item_id="項目")],
    "empty strings": [event(user_id="", event_id="")],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_interactions_match_column_by_column(name):
    records = CASES[name]
    actual = formats.records_to_table(records, "interactions")
    expected = column_by_column(records, "interactions")
    assert actual.schema == expected.schema
    assert actual.equals(expected)


@pytest.mark.parametrize("records", [
    [{"item_id": "a", "title": "A", "price": 1.5}, {"item_id": "b", "title": "B", "category": None}],
    [{"item_id": "a", "title": 3}],
    [{"item_id": "a", "title": "A", "brand": None, "description": "d"}],
])
def test_items_match_column_by_column(records):
    actual = formats.records_to_table(records, "items")
    expected = column_by_column(records, "items")
    assert actual.schema == expected.schema
    assert actual.equals(expected)


def test_no_records():
    assert formats.records_to_table([], "interactions").num_rows == 0
