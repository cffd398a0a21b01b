from datetime import datetime, timezone

import pyarrow as pa
import pytest

from recsys_ray import schemas
from recsys_ray.stages import features

CUTOFF = datetime(2024, 3, 10, tzinfo=timezone.utc)
CUTOFF_US = int(CUTOFF.timestamp() * 1_000_000)


def ts(day, hour=0, minute=0):
    return datetime(2024, 3, day, hour, minute, tzinfo=timezone.utc)


def events(rows):
    """Events from (user_id, item_id, interaction_type, timestamp, rating) tuples."""
    users, items, types, times, ratings = zip(*rows)
    return pa.table(
        {
            "user_id": pa.array(users, pa.string()),
            "item_id": pa.array(items, pa.string()),
            "interaction_type": pa.array(types, pa.string()),
            "timestamp": pa.array(times, schemas.TIMESTAMP),
            "rating": pa.array(ratings, pa.float64()),
            "event_id": pa.array([f"e{i}" for i in range(len(rows))], pa.string()),
        }
    )


TRAIN = events([
    ("u1", "i1", "view", ts(1, 10), None),
    ("u2", "i1", "add_to_cart", ts(5, 6), None),
    ("u1", "i1", "click", ts(1, 23, 59), None),
    ("u1", "i2", "purchase", ts(2, 0, 1), 4.0),
    ("u1", "i3", "like", ts(4, 12), 2.0),
    ("u1", "i2", "view", ts(4, 13), None),
])


def zero_counts(prefix):
    return {f"{prefix}n_{t}": 0 for t in schemas.INTERACTION_TYPES}


def test_user_features_exact_values():
    result = features.user_features(TRAIN, CUTOFF_US)
    assert result.schema == schemas.USER_FEATURES
    rows = {r["user_id"]: r for r in result.to_pylist()}
    assert set(rows) == {"u1", "u2"}
    assert rows["u1"] == {
        "user_id": "u1",
        "user_total_interactions": 5,
        "user_unique_items": 3,
        **zero_counts("user_"),
        "user_n_view": 2,
        "user_n_click": 1,
        "user_n_like": 1,
        "user_n_purchase": 1,
        "user_avg_rating": 3.0,
        "user_purchase_rate": 0.2,
        "user_days_active": 3,  # March 1, 2 and 4 (23:59 and 00:01 fall on different UTC dates)
        "user_last_ts": ts(4, 13),
        "user_recency_days": pytest.approx(5 + 11 / 24),
    }
    assert rows["u2"] == {
        "user_id": "u2",
        "user_total_interactions": 1,
        "user_unique_items": 1,
        **zero_counts("user_"),
        "user_n_add_to_cart": 1,
        "user_avg_rating": None,
        "user_purchase_rate": 0.0,
        "user_days_active": 1,
        "user_last_ts": ts(5, 6),
        "user_recency_days": 4.75,
    }


def test_user_features_of_empty_table():
    result = features.user_features(TRAIN.slice(0, 0), CUTOFF_US)
    assert result.schema == schemas.USER_FEATURES
    assert result.num_rows == 0


def by_item(table):
    return {r["item_id"]: r for r in table.to_pylist()}


def test_item_partials_exact_values():
    result = features.item_partials(TRAIN)
    assert result.schema == features.ITEM_PARTIALS
    rows = by_item(result)
    assert rows["i1"] == {"item_id": "i1", "total": 3, "unique_users": 2, "n_view": 1, "n_click": 1, "n_like": 0,
                          "n_add_to_cart": 1, "n_purchase": 0, "rating_sum": 0.0, "rating_count": 0}
    assert rows["i2"] == {"item_id": "i2", "total": 2, "unique_users": 1, "n_view": 1, "n_click": 0, "n_like": 0,
                          "n_add_to_cart": 0, "n_purchase": 1, "rating_sum": 4.0, "rating_count": 1}
    assert set(rows) == {"i1", "i2", "i3"}


BATCH_A = events([
    ("a1", "i1", "view", ts(1), None),
    ("a1", "i1", "view", ts(2), 5.0),
    ("a1", "i2", "click", ts(2), None),
    ("a2", "i1", "click", ts(3), 3.0),
    ("a2", "i3", "purchase", ts(3), 4.0),
])
BATCH_B = events([
    ("b1", "i1", "view", ts(4), None),
    ("b1", "i1", "purchase", ts(4, 1), 1.0),
    ("b2", "i2", "view", ts(5), None),
    ("b2", "i4", "like", ts(5), None),
])


def test_summed_partials_of_disjoint_user_batches_equal_partials_of_union():
    partials = pa.concat_tables([features.item_partials(BATCH_A), features.item_partials(BATCH_B)])
    summed = features.sum_item_partials(partials)
    union = features.item_partials(pa.concat_tables([BATCH_A, BATCH_B]))
    assert summed.schema == features.ITEM_PARTIALS
    assert summed.sort_by("item_id").equals(union.sort_by("item_id"))
    assert by_item(summed)["i1"] == {"item_id": "i1", "total": 5, "unique_users": 3, "n_view": 3, "n_click": 1,
                                     "n_like": 0, "n_add_to_cart": 0, "n_purchase": 1, "rating_sum": 9.0,
                                     "rating_count": 3}


def test_sum_item_partials_of_nothing():
    result = features.sum_item_partials(features.ITEM_PARTIALS.empty_table())
    assert result.schema == features.ITEM_PARTIALS and result.num_rows == 0
    assert features.item_partials(TRAIN.slice(0, 0)).num_rows == 0


def test_item_features_exact_values():
    summed = features.sum_item_partials(
        pa.concat_tables([features.item_partials(BATCH_A), features.item_partials(BATCH_B)]))
    result = features.item_features(summed, train_users=4)
    assert result.schema == schemas.ITEM_FEATURES
    assert result.column("item_id").to_pylist() == ["i1", "i2", "i3", "i4"]
    rows = by_item(result)
    assert rows["i1"] == {
        "item_id": "i1", "item_total_interactions": 5, "item_unique_users": 3,
        **zero_counts("item_"), "item_n_view": 3, "item_n_click": 1, "item_n_purchase": 1,
        "item_avg_rating": 3.0, "item_ctr": pytest.approx(1 / 3), "item_purchase_rate": 0.2,
        "item_popularity": 0.75,
    }
    assert rows["i2"]["item_ctr"] == 1.0  # one click over one view
    assert rows["i2"]["item_avg_rating"] is None
    assert rows["i2"]["item_popularity"] == 0.5
    assert rows["i3"]["item_ctr"] is None  # no views
    assert rows["i3"]["item_purchase_rate"] == 1.0
    assert rows["i3"]["item_avg_rating"] == 4.0
    assert rows["i4"] == {
        "item_id": "i4", "item_total_interactions": 1, "item_unique_users": 1,
        **zero_counts("item_"), "item_n_like": 1,
        "item_avg_rating": None, "item_ctr": None, "item_purchase_rate": 0.0, "item_popularity": 0.25,
    }


def test_item_features_with_no_training_users_does_not_divide_by_zero():
    result = features.item_features(features.item_partials(BATCH_B), train_users=0)
    assert by_item(result)["i1"]["item_popularity"] == 1.0

