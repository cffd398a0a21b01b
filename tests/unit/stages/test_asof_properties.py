"""The as-of features of random small snapshots against a plain per-row recomputation.

Snapshots are drawn so that everything that can tie does: event times on a
half-day grid (so t - N days often lands exactly on an event), several events
at one time, query times equal to event times, a microsecond either side, and
repeated (key, t) rows.
"""

import math
import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from recsys_ray import schemas
from recsys_ray.stages import asof

DAY = 86_400_000_000
BASE = 1_709_251_200_000_000  # 2024-03-01T00:00:00Z
TYPES = schemas.INTERACTION_TYPES
WINDOWS = (1, 3)
HISTORY = 4
SNAPSHOTS = 200


def random_snapshot(rng: random.Random):
    users = [f"u{n}" for n in range(rng.randint(1, 5))]
    items = [f"i{n}" for n in range(rng.randint(1, 6))]
    grid = [BASE + k * DAY // 2 for k in range(12)]
    fractional = rng.random() < 0.5  # ratings such as 3.7 take the exact-integer path, whole stars the float one
    rows = []
    for _ in range(rng.randint(0, 40)):
        ts = rng.choice(grid) + rng.choice([0, 0, 0, 1, -1, DAY // 7])
        rating = None if rng.random() < 0.4 else (round(rng.uniform(1, 5), 1) if fractional else rng.randint(1, 5))
        rows.append((rng.choice(users), rng.choice(items), rng.choice(TYPES), ts, rating))
    event_times = [r[3] for r in rows] or grid
    times = [rng.choice(event_times) + rng.choice([0, 0, 1, -1]) if rng.random() < 0.7 else rng.choice(grid)
             for _ in range(rng.randint(1, 12))]
    user_rows = [(rng.choice(users + ["nobody"]), rng.choice(times)) for _ in range(rng.randint(1, 25))]
    item_rows = [(rng.choice(items + ["unsold"]), rng.choice(times)) for _ in range(rng.randint(1, 25))]
    return rows, user_rows, item_rows


def event_table(rows):
    users, items, types, times, ratings = zip(*rows) if rows else ((),) * 5
    return pa.table({"user_id": pa.array(users, pa.string()), "item_id": pa.array(items, pa.string()),
                     "interaction_type": pa.array(types, pa.string()),
                     "timestamp": pa.array(times, pa.int64()).cast(pa.timestamp("us")).cast(schemas.TIMESTAMP),
                     "rating": pa.array(ratings, pa.float64())})


def timestamps(times):
    return pa.array(times, pa.int64()).cast(pa.timestamp("us")).cast(schemas.TIMESTAMP)


def mean(values):
    return math.fsum(values) / len(values) if values else None


def ratio(a, b):
    return a / b if b else None


def expected_user(rows, user, t):
    before = [r for r in rows if r[0] == user and r[3] < t]
    ratings = [r[4] for r in before if r[4] is not None]
    n = {k: sum(r[2] == k for r in before) for k in TYPES}
    last = max((r[3] for r in before), default=None)
    history = sorted(before, key=lambda r: (r[3], r[1], r[2]))[-HISTORY:]
    return {
        "user_total_interactions": len(before),
        "user_unique_items": len({r[1] for r in before}),
        **{f"user_n_{k}": n[k] for k in TYPES},
        "user_avg_rating": mean(ratings),
        "user_purchase_rate": ratio(n["purchase"], len(before)),
        "user_days_active": len({r[3] // DAY for r in before}),
        "user_last_ts": last,
        "user_recency_days": None if last is None else (t - last) / DAY,
        **{f"user_events_{w}d": sum(t - w * DAY <= r[3] for r in before) for w in WINDOWS},
        "history_item_ids": [r[1] for r in history],
        "history_interaction_types": [r[2] for r in history],
    }


def expected_item(rows, item, t):
    before = [r for r in rows if r[1] == item and r[3] < t]
    ratings = [r[4] for r in before if r[4] is not None]
    n = {k: sum(r[2] == k for r in before) for k in TYPES}
    users_before = len({r[0] for r in rows if r[3] < t})
    unique_users = len({r[0] for r in before})
    return {
        "item_total_interactions": len(before),
        "item_unique_users": unique_users,
        **{f"item_n_{k}": n[k] for k in TYPES},
        "item_avg_rating": mean(ratings),
        "item_ctr": ratio(n["click"], n["view"]),
        "item_purchase_rate": ratio(n["purchase"], len(before)),
        "item_popularity": ratio(unique_users, users_before),
        **{f"item_events_{w}d": sum(t - w * DAY <= r[3] for r in before) for w in WINDOWS},
        "item_category": f"cat-{item}" if item in ("i0", "i2") else None,
        "item_brand": None,
        "item_price": 1.5 if item in ("i0", "i2") else None,
    }


def as_rows(table):
    if "user_last_ts" in table.column_names:
        index = table.column_names.index("user_last_ts")
        table = table.set_column(index, "user_last_ts", pc.cast(pc.cast(table.column(index), pa.timestamp("us")),
                                                                  pa.int64()))
    return table.to_pylist()


CATALOG = pa.table({"item_id": ["i0", "i2", "other"], "category": ["cat-i0", "cat-i2", "x"],
                    "brand": pa.array([None, None, "b"], pa.string()), "price": [1.5, 1.5, 2.0]})


@pytest.mark.parametrize("chunk_values", [asof.HISTORY_CHUNK_VALUES, HISTORY + 1])
def test_user_features_equal_a_per_row_recomputation(monkeypatch, chunk_values):
    monkeypatch.setattr(asof, "HISTORY_CHUNK_VALUES", chunk_values)  # history lists in one chunk, or one per row
    rng = random.Random(13)
    for _ in range(SNAPSHOTS):
        rows, user_rows, _ = random_snapshot(rng)
        users, times = zip(*user_rows)
        queries = pa.table({"user_id": pa.array(users, pa.string()), "timestamp": timestamps(times)})
        got = as_rows(asof.user_features_as_of(event_table(rows), queries, windows_days=WINDOWS, history=HISTORY))
        assert got == [expected_user(rows, u, t) for u, t in user_rows], rows


def test_item_features_equal_a_per_row_recomputation():
    rng = random.Random(29)
    for _ in range(SNAPSHOTS):
        rows, _, item_rows = random_snapshot(rng)
        items, times = zip(*item_rows)
        events = event_table(rows)
        # users_before the way the wiring gets it: first-seen times of whole users, then a count.
        first_seen = asof.user_first_seen(events).column("first_seen")
        sorted_first = np.sort(pc.cast(pc.cast(first_seen, pa.timestamp("us")), pa.int64()).to_numpy())
        queries = pa.table({"item_id": pa.array(items, pa.string()), "timestamp": timestamps(times),
                            "users_before": asof.count_before(sorted_first, np.array(times, dtype=np.int64))})
        got = as_rows(asof.item_features_as_of(events, queries, windows_days=WINDOWS, catalog=CATALOG))
        assert got == [expected_item(rows, i, t) for i, t in item_rows], rows
