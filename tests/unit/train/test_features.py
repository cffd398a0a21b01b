"""Model inputs from training rows: vocabulary indices, padded history and standardised features,
checked against a direct per-value recomputation."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from recsys_ray.train.features import FeatureSpec, Standardiser, model_inputs, padded_lists
from tests.unit.train.support import CARDINALITIES, HISTORY, schema_of, training_rows


def test_standardised_with_the_schema_statistics_and_null_indicators():
    rows = training_rows(9)
    schema = schema_of(rows)
    standardise = Standardiser.from_schema(schema, "user_")
    names = [c.name for c in schema.continuous("user_")]
    assert list(standardise.columns) == names
    with_nulls = [n for n in names if rows.column(n).null_count > 0]
    assert with_nulls and list(standardise.indicators) == with_nulls
    matrix = standardise(rows)
    assert matrix.dtype == np.float32 and matrix.shape == (9, len(names) + len(with_nulls))
    for j, name in enumerate(names):
        stats = schema.stats(name)
        for r, value in enumerate(rows.column(name).to_pylist()):
            expected = 0.0 if value is None else (value - stats.mean) / (stats.std or 1.0)
            assert matrix[r, j] == pytest.approx(expected, rel=1e-5, abs=1e-6)
            if name in with_nulls:
                assert matrix[r, len(names) + with_nulls.index(name)] == (1.0 if value is None else 0.0)


def test_a_constant_column_is_centred_and_nan_counts_as_missing():
    table = pa.table({"a": pa.array([2.0, 2.0, float("nan"), None])})
    standardise = Standardiser(columns=("a",), mean=(2.0,), std=(1.0,), indicators=("a",))
    np.testing.assert_array_equal(standardise(table), [[0, 0], [0, 0], [0, 1], [0, 1]])


def test_padded_lists_keep_the_first_values_and_pad_with_zero():
    lists = [[5, 6], [], None, [1, None, 3, 4, 7], [8]]
    column = pa.chunked_array([pa.array(lists[:2], pa.list_(pa.int32())), pa.array(lists[2:], pa.list_(pa.int32()))])
    out = padded_lists(column, 3)
    expected = [[(v or 0) for v in (values or [])][:3] + [0] * (3 - len((values or [])[:3])) for values in lists]
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, expected)
    assert padded_lists(pa.array([[1]], pa.list_(pa.int32())), 0).shape == (1, 0)
    # A slice of a larger array starts at its own offset.
    np.testing.assert_array_equal(padded_lists(pa.array(lists, pa.list_(pa.int32())).slice(3, 2), 2),
                                  [[1, 0], [8, 0]])


def test_model_inputs_of_training_rows():
    rows = training_rows(7, seed=2)
    spec = FeatureSpec.from_schema(schema_of(rows))
    assert spec.cardinalities == CARDINALITIES and spec.history_length == HISTORY
    inputs = model_inputs(rows, spec)
    for name in CARDINALITIES:
        np.testing.assert_array_equal(inputs[name], rows.column(name).to_numpy())
        assert inputs[name].dtype == np.int64
    assert inputs["history"].shape == (7, HISTORY)
    np.testing.assert_array_equal(inputs["history"], padded_lists(rows.column("history_item_idx"), HISTORY))
    assert inputs["user_features"].shape == (7, spec.user.width)
    assert inputs["item_features"].shape == (7, spec.item.width)
    assert "item_price" in spec.item.columns and not any(c.startswith("user_") for c in spec.item.columns)
    np.testing.assert_array_equal(inputs["label"], rows.column("label").to_numpy().astype(np.float32))
    assert all(math.isfinite(v) for v in inputs["item_features"].ravel())


def test_a_null_index_is_padding():
    rows = training_rows(3)
    spec = FeatureSpec.from_schema(schema_of(rows))
    rows = rows.set_column(rows.schema.get_field_index("item_brand_idx"), "item_brand_idx",
                           pa.array([None, 3, None], pa.int32()))
    np.testing.assert_array_equal(model_inputs(rows, spec)["item_brand_idx"], [0, 3, 0])
