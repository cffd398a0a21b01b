"""Model inputs from training rows: stable hashed ids, squashed numeric features."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from recsys_ray import schemas
from recsys_ray.train.features import (
    ITEM_FEATURES,
    USER_FEATURES,
    feature_matrix,
    hash_buckets,
    model_inputs,
)


def training_rows(n: int = 5) -> pa.Table:
    columns = {}
    for field in schemas.TRAINING:
        if field.name in ("user_id", "item_id"):
            columns[field.name] = pa.array([f"{field.name[0]}{i % 3}" for i in range(n)])
        elif field.name == "split":
            columns[field.name] = pa.array(["train"] * n)
        elif pa.types.is_list(field.type):
            value = "i0" if pa.types.is_string(field.type.value_type) else 2
            columns[field.name] = pa.array([[value]] * n, field.type)
        elif pa.types.is_string(field.type):
            columns[field.name] = pa.array([f"v{i}" for i in range(n)])
        elif pa.types.is_timestamp(field.type):
            columns[field.name] = pa.array(np.arange(n) * 1_000_000, field.type)
        else:
            columns[field.name] = pa.array(np.arange(n), field.type)
    return pa.table(columns, schema=schemas.TRAINING)


def test_numeric_feature_columns_come_from_the_training_schema():
    assert USER_FEATURES[0] == "user_total_interactions" and "user_avg_rating" in USER_FEATURES
    assert "item_popularity" in ITEM_FEATURES and "item_ctr" in ITEM_FEATURES
    assert "user_last_ts" not in USER_FEATURES  # a timestamp, not a number


def test_hash_buckets_are_stable_and_in_range():
    ids = pa.array(["u1", "u2", "u1", None, "a-much-longer-id"])
    buckets = hash_buckets(ids, 1000)
    assert buckets.dtype == np.int64
    assert ((buckets >= 0) & (buckets < 1000)).all()
    assert buckets[0] == buckets[2] and buckets[0] != buckets[1]
    # The same id gets the same bucket in another batch and another chunking.
    chunked = pa.chunked_array([["u2"], ["u1"]])
    assert list(hash_buckets(chunked, 1000)) == [buckets[1], buckets[0]]


def test_feature_matrix_squashes_and_zero_fills():
    table = pa.table({"a": pa.array([0, 9, None], pa.int64()),
                      "b": pa.array([-(np.e - 1), float("nan"), float("inf")], pa.float64())})
    matrix = feature_matrix(table, ("a", "b"))
    assert matrix.dtype == np.float32 and matrix.shape == (3, 2)
    np.testing.assert_allclose(matrix[:, 0], [0.0, np.log(10.0), 0.0], rtol=1e-6)
    np.testing.assert_allclose(matrix[:, 1], [-1.0, 0.0, 0.0], rtol=1e-6)


def test_model_inputs_shapes_and_labels():
    rows = training_rows(5)
    inputs = model_inputs(rows, buckets=64)
    assert inputs["user"].shape == (5,) and inputs["item"].shape == (5,)
    assert inputs["user_features"].shape == (5, len(USER_FEATURES))
    assert inputs["item_features"].shape == (5, len(ITEM_FEATURES))
    assert inputs["label"].dtype == np.float32
    np.testing.assert_array_equal(inputs["label"], np.arange(5, dtype=np.float32))
    assert inputs["user"][0] == inputs["user"][3]  # same user id, same bucket
