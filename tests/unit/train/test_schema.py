"""The typed training schema: read from a version's manifest, with tags, cardinalities and statistics."""

from __future__ import annotations

import pydantic
import pytest

from recsys_ray import schemas
from recsys_ray.build.manifest import write_manifest
from recsys_ray.train import TrainingSchema, training_schema
from tests.unit.build.test_manifest import manifest as example_manifest
from tests.unit.train.support import HISTORY, WINDOWS, schema_of, training_rows


@pytest.fixture
def version(tmp_path):
    rows = training_rows(8)
    recorded = schema_of(rows)
    manifest = example_manifest().model_copy(update={"columns": list(recorded.columns),
                                                     "config": {"windows": list(WINDOWS), "history": HISTORY}})
    write_manifest(manifest, str(tmp_path))
    return tmp_path, rows


def test_read_from_the_manifest(version):
    root, rows = version
    for uri in (str(root), str(root / "manifest.json")):
        schema = training_schema(uri)
        assert isinstance(schema, TrainingSchema)
        assert schema.names == rows.schema.names
        assert schema.history_length == HISTORY
        assert schema.arrow() == schemas.training_schema(WINDOWS, HISTORY)


def test_tags_select_columns_in_schema_order(version):
    schema = training_schema(str(version[0]))
    arrow = schemas.training_schema(WINDOWS, HISTORY)
    tagged = {tag: [f.name for f in arrow if tag in schemas.column_tags(f)] for tag in ("categorical", "continuous")}
    assert [c.name for c in schema.categorical()] == tagged["categorical"]
    assert [c.name for c in schema.continuous()] == tagged["continuous"]
    assert [c.name for c in schema.continuous("user_")] == [n for n in tagged["continuous"] if n.startswith("user_")]
    assert "item_price" in [c.name for c in schema.continuous("item_")]
    assert [c.name for c in schema.tagged("list", "item_id")] == ["history_item_ids", "history_item_idx"]
    assert "user_last_ts" not in tagged["continuous"]


def test_cardinalities_and_statistics(version):
    root, rows = version
    schema = training_schema(str(root))
    assert schema.cardinality("item_idx") == 9 and schema.cardinality("history_item_idx") == 9
    stats = schema.stats("user_avg_rating")
    values = [v for v in rows.column("user_avg_rating").to_pylist() if v is not None]
    assert stats.null_count == rows.num_rows - len(values) > 0
    assert stats.mean == pytest.approx(sum(values) / len(values))
    with pytest.raises(ValueError, match="no vocabulary"):
        schema.cardinality("user_avg_rating")
    with pytest.raises(ValueError, match="no statistics"):
        schema.stats("item_idx")
    with pytest.raises(KeyError, match="no column 'nope'"):
        schema.column("nope")
    assert "item_idx" in schema and "nope" not in schema


def test_frozen(version):
    schema = training_schema(str(version[0]))
    with pytest.raises(pydantic.ValidationError):
        schema.history_length = 5
