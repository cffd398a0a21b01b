"""Scoring the evaluation set as of the cutoff: item rows per vocabulary index, user rows with
indices, the new-user row, and the scorer's matrix against a per-pair recomputation."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from recsys_ray import schemas
from recsys_ray.train.features import FeatureSpec, model_inputs, user_inputs
from recsys_ray.train.scoring import (
    EmbeddingScorer,
    catalog_attributes,
    item_rows,
    new_user_row,
    user_rows,
)
from tests.unit.train.support import schema_of, training_rows


def vocabulary(values: list[str]) -> pa.Table:
    return pa.table({"value": values, "index": pa.array(range(2, 2 + len(values)), pa.int32()),
                     "count": pa.array([1] * len(values), pa.int64())})


def test_catalog_attributes_are_the_same_whatever_the_grouping():
    rows = training_rows(40, seed=3)
    # An item's attributes are the same on every row, as in a build.
    item = rows.column("item_idx").to_numpy()
    rows = rows.set_column(rows.schema.get_field_index("item_category_idx"), "item_category_idx",
                           pa.array(item % 3, pa.int32()))
    rows = rows.set_column(rows.schema.get_field_index("item_price"), "item_price",
                           pa.array(item * 1.5, pa.float64()))
    whole = catalog_attributes(rows)
    assert whole.column("item_idx").to_pylist() == sorted(set(item.tolist()))
    for row in whole.to_pylist():
        assert row["item_category_idx"] == row["item_idx"] % 3 and row["item_price"] == row["item_idx"] * 1.5
    parts = pa.concat_tables([catalog_attributes(rows.slice(0, 13)), catalog_attributes(rows.slice(13))])
    assert catalog_attributes(parts).equals(whole)


def test_item_rows_one_per_index_with_features_as_of_the_cutoff():
    rows = training_rows(10)
    schema = schema_of(rows)
    items = vocabulary([f"i{j}" for j in range(7)])  # indices 2..8, cardinality 9
    features = pa.table({"item_id": ["i3", "i0", "zz"], "item_total_interactions": pa.array([5, 7, 9], pa.int64()),
                         "item_ctr": [0.5, None, 0.1]})
    attributes = pa.table({"item_idx": pa.array([2, 5], pa.int32()), "item_category_idx": pa.array([3, 2], pa.int32()),
                           "item_brand_idx": pa.array([4, 1], pa.int32()), "item_price": [9.5, 1.0]})
    table = item_rows(schema, items, features, attributes)
    assert table.column("item_idx").to_pylist() == list(range(9))
    by_index = {r["item_idx"]: r for r in table.to_pylist()}
    assert by_index[5]["item_total_interactions"] == 5 and by_index[5]["item_ctr"] == 0.5
    assert by_index[2]["item_total_interactions"] == 7 and by_index[2]["item_ctr"] is None
    assert by_index[5]["item_category_idx"] == 2 and by_index[2]["item_price"] == 9.5
    # No feature row: counts 0, rates null; no training row: null attributes. "zz" is not in the vocabulary.
    assert by_index[4]["item_total_interactions"] == 0 and by_index[4]["item_ctr"] is None
    assert by_index[4]["item_category_idx"] is None
    assert 9 not in by_index


def test_user_rows_and_the_new_user_row():
    rows = training_rows(4)
    schema = schema_of(rows)
    spec = FeatureSpec.from_schema(schema)
    users = pa.table({"user_id": ["u1", "u9"], "user_total_interactions": pa.array([3, 1], pa.int64()),
                      "history_item_ids": pa.array([["i1", "i0", "gone"], []], pa.list_(pa.string()))})
    table = user_rows(users, vocabulary(["u0", "u1"]), vocabulary(["i0", "i1"]))
    assert table.column("user_idx").to_pylist() == [3, 1]
    assert table.column("history_item_idx").to_pylist() == [[3, 2, 1], []]
    new = user_inputs(new_user_row(schema), spec)
    assert new["user_idx"].tolist() == [1] and new["history"].tolist() == [[0] * spec.history_length]
    names = list(spec.user.columns)
    counts = [n for n in names if pa.types.is_integer(schemas.training_schema((7,), 3).field(n).type)]
    for name in counts:  # a count of 0, standardised
        stats = schema.stats(name)
        assert new["user_features"][0, names.index(name)] == pytest.approx((0 - stats.mean) / stats.std, rel=1e-5)
    assert (new["user_features"][0, len(names):] == 1.0).all()  # every float feature with nulls is null


def test_scorer_matrix_is_the_dot_product_plus_bias():
    rng = np.random.default_rng(0)
    users = pa.array(["a", "b", "c"])
    user_vectors = rng.normal(size=(3, 4)).astype(np.float32)
    new_user = rng.normal(size=4).astype(np.float32)
    items = rng.normal(size=(6, 4)).astype(np.float32)
    bias = rng.normal(size=6).astype(np.float32)
    scorer = EmbeddingScorer(users, user_vectors, new_user, items, bias)
    batch = pa.table({"user_id": ["c", "zz", "a"], "user_idx": pa.array([4, 1, 2], pa.int32())})
    scores = scorer(batch)
    assert scores.dtype == np.float32 and scores.shape == (3, 6)
    vectors = {"a": user_vectors[0], "b": user_vectors[1], "c": user_vectors[2]}
    for r, user in enumerate(["c", "zz", "a"]):
        for j in range(6):
            expected = float(np.dot(vectors.get(user, new_user).astype(np.float64), items[j])) + bias[j]
            assert scores[r, j] == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_model_inputs_of_eval_rows_match_training_rows():
    # The same row through the training path and the evaluation path gives the same user inputs.
    rows = training_rows(5, seed=4)
    spec = FeatureSpec.from_schema(schema_of(rows))
    train = model_inputs(rows, spec)
    served = user_inputs(rows.select(["user_idx", "history_item_idx", *spec.user.columns]), spec)
    for name in ("user_idx", "history", "user_features"):
        np.testing.assert_array_equal(train[name], served[name])
