import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from recsys_ray import schemas
from recsys_ray.stages import asof, features
from recsys_ray.stages.split import train_events
from tests.unit.stages.test_features import events

T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)
US = timedelta(microseconds=1)
POSITIVE = ("click", "like", "add_to_cart", "purchase")


def at(days=0.0, hours=0.0):
    return T0 + timedelta(days=days, hours=hours)


def user_queries(rows):
    users, times = zip(*rows) if rows else ((), ())
    return pa.table({"user_id": pa.array(users, pa.string()), "timestamp": pa.array(times, schemas.TIMESTAMP)})


def item_queries(rows):
    items, times, users_before = zip(*rows) if rows else ((), (), ())
    return pa.table({"item_id": pa.array(items, pa.string()), "timestamp": pa.array(times, schemas.TIMESTAMP),
                     "users_before": pa.array(users_before, pa.int64())})


def counts(prefix, **nonzero):
    return {f"{prefix}_n_{t}": nonzero.get(t, 0) for t in schemas.INTERACTION_TYPES}


EMPTY_USER = {
    "user_total_interactions": 0, "user_unique_items": 0, **counts("user"), "user_avg_rating": None,
    "user_purchase_rate": None, "user_days_active": 0, "user_last_ts": None, "user_recency_days": None,
    "user_events_7d": 0, "user_events_30d": 0, "history_item_ids": [], "history_interaction_types": [],
}

U1 = events([
    ("u1", "i1", "view", at(0, 10), None),
    ("u1", "i1", "click", at(0, 23.5), None),
    ("u1", "i2", "purchase", at(1, 0.5), 4.0),
    ("u1", "i3", "like", at(3, 12), 2.5),
    ("u1", "i2", "view", at(3, 13), None),
    ("u1", "i9", "view", at(20), None),  # after the query time: never counts
])


def test_user_features_exact_values():
    result = asof.user_features_as_of(U1, user_queries([("u1", at(5))]))
    assert result.schema == asof.user_as_of_schema()
    assert result.to_pylist() == [{
        "user_total_interactions": 5,
        "user_unique_items": 3,
        **counts("user", view=2, click=1, like=1, purchase=1),
        "user_avg_rating": 3.25,
        "user_purchase_rate": 0.2,
        "user_days_active": 3,  # March 1, 2 and 4 (23:30 and 00:30 fall on different UTC days)
        "user_last_ts": at(3, 13),
        "user_recency_days": 1 + 11 / 24,
        "user_events_7d": 5,
        "user_events_30d": 5,
        "history_item_ids": ["i1", "i1", "i2", "i3", "i2"],
        "history_interaction_types": ["view", "click", "purchase", "like", "view"],
    }]


def test_events_at_exactly_t_never_count_and_simultaneous_events_count_together():
    batch = events([
        ("u1", "i1", "view", at(1), None),
        ("u1", "i2", "click", at(2), 5.0),
        ("u1", "i3", "like", at(2), 3.0),
    ])
    result = asof.user_features_as_of(batch, user_queries([("u1", at(2)), ("u1", at(2) + US)])).to_pylist()
    at_t, just_after = result
    assert at_t["user_total_interactions"] == 1 and at_t["history_item_ids"] == ["i1"]
    assert at_t["user_avg_rating"] is None and at_t["user_last_ts"] == at(1)
    assert just_after["user_total_interactions"] == 3 and just_after["user_avg_rating"] == 4.0
    assert just_after["user_last_ts"] == at(2) and just_after["user_recency_days"] == 1 / 86_400_000_000


def test_window_includes_its_start_and_excludes_t():
    t = at(10)
    batch = events([
        ("u1", "a", "view", t - timedelta(days=7) - US, None),  # just outside the 7-day window
        ("u1", "b", "view", t - timedelta(days=7), None),       # exactly t - 7 days: inside
        ("u1", "c", "view", t - US, None),                      # inside
        ("u1", "d", "view", t, None),                           # at t: outside
    ])
    row = asof.user_features_as_of(batch, user_queries([("u1", t)]), windows_days=(7,)).to_pylist()[0]
    assert row["user_events_7d"] == 2
    assert row["user_total_interactions"] == 3
    items = asof.item_features_as_of(
        events([("u1", "x", "view", e, None) for e in
                (t - timedelta(days=1) - US, t - timedelta(days=1), t)]),
        item_queries([("x", t, 1)]), windows_days=(1, 30)).to_pylist()[0]
    assert items["item_events_1d"] == 1 and items["item_events_30d"] == 2


def test_users_without_earlier_events_get_zero_counts_null_rates_and_empty_history():
    result = asof.user_features_as_of(U1, user_queries([("u1", at(0, 10)), ("nobody", at(5))]))
    assert result.to_pylist() == [EMPTY_USER, EMPTY_USER]
    assert result.column("history_item_ids").null_count == 0


def test_history_ties_ordered_by_item_then_type_and_truncated_to_the_latest():
    batch = events([
        ("u1", "b", "view", at(2), None),
        ("u1", "a", "view", at(2), None),
        ("u1", "a", "click", at(2), None),
        ("u1", "z", "like", at(1), None),
        ("u1", "c", "purchase", at(3), None),
        ("u1", "y", "view", at(0), None),
    ])
    full, short = (asof.user_features_as_of(batch, user_queries([("u1", at(4))]), history=n).to_pylist()[0]
                   for n in (20, 3))
    assert full["history_item_ids"] == ["y", "z", "a", "a", "b", "c"]
    assert full["history_interaction_types"] == ["view", "like", "click", "view", "view", "purchase"]
    assert short["history_item_ids"] == ["a", "b", "c"]
    assert short["history_interaction_types"] == ["view", "view", "purchase"]


def test_many_rows_per_user_and_time_keep_query_order():
    batch = pa.concat_tables([U1, events([("u2", "i1", "like", at(1), 1.0), ("u2", "i4", "view", at(4), None)])])
    rows = [("u2", at(5)), ("u1", at(5)), ("u2", at(5)), ("u1", at(2)), ("u2", at(2)), ("u1", at(5)),
            ("ghost", at(5)), ("u2", at(5))]
    together = asof.user_features_as_of(batch, user_queries(rows)).to_pylist()
    alone = [asof.user_features_as_of(batch, user_queries([row])).to_pylist()[0] for row in rows]
    assert together == alone
    assert [r["user_total_interactions"] for r in together] == [2, 5, 2, 3, 1, 5, 0, 2]


def test_users_in_one_batch_do_not_see_each_other():
    batch = pa.concat_tables([U1, events([("u0", "i7", "purchase", at(0), 5.0)])])
    rows = asof.user_features_as_of(batch, user_queries([("u0", at(5)), ("u1", at(5))])).to_pylist()
    assert rows[0]["user_total_interactions"] == 1 and rows[0]["history_item_ids"] == ["i7"]
    assert rows[1] == asof.user_features_as_of(U1, user_queries([("u1", at(5))])).to_pylist()[0]


def test_empty_inputs():
    none = asof.user_features_as_of(U1, user_queries([]), windows_days=(3,), history=5)
    assert none.num_rows == 0 and none.schema == asof.user_as_of_schema((3,), 5)
    assert asof.user_features_as_of(U1.slice(0, 0), user_queries([("u1", at(1))])).to_pylist() == [EMPTY_USER]
    assert asof.item_features_as_of(U1, item_queries([])).schema == asof.item_as_of_schema()
    row = asof.item_features_as_of(U1.slice(0, 0), item_queries([("i1", at(1), 0)])).to_pylist()[0]
    assert row["item_total_interactions"] == 0 and row["item_popularity"] is None
    assert asof.user_first_seen(U1.slice(0, 0)).schema == asof.FIRST_SEEN


def test_windows_and_history_can_be_turned_off_and_are_checked():
    result = asof.user_features_as_of(U1, user_queries([("u1", at(5))]), windows_days=(), history=0)
    assert result.column_names == [f.name for f in schemas.USER_FEATURES if f.name != "user_id"]
    assert asof.item_as_of_schema(()).names == ([f.name for f in schemas.ITEM_FEATURES if f.name != "item_id"]
                                                + ["item_category", "item_brand", "item_price"])
    for bad in ((0,), (7, 7), (1.5,), (-1,)):
        with pytest.raises(ValueError, match="windows"):
            asof.user_as_of_schema(bad)
    with pytest.raises(ValueError, match="history"):
        asof.user_as_of_schema(history=-1)
    with pytest.raises(ValueError, match="timestamps"):
        asof.user_features_as_of(U1, pa.table({"user_id": ["u1"], "timestamp": pa.array([None], schemas.TIMESTAMP)}))
    with pytest.raises(ValueError, match="user_id"):
        asof.user_features_as_of(U1, pa.table({"user_id": pa.array([None], pa.string()),
                                               "timestamp": pa.array([at(1)], schemas.TIMESTAMP)}))
    with pytest.raises(ValueError, match="users_before"):
        asof.item_features_as_of(U1, item_queries([("i1", at(1), None)]))


def test_history_in_small_chunks_equals_one_chunk(monkeypatch):
    batch = events([("u1", f"i{n % 4}", "view", at(n), None) for n in range(8)]
                   + [("u2", "i9", "like", at(1), None)])
    queries = user_queries([("u1", at(n)) for n in (8, 2, 0, 8, 5, 9)] + [("u2", at(2)), ("u1", at(8))])
    whole = asof.user_features_as_of(batch, queries, history=3)
    monkeypatch.setattr(asof, "HISTORY_CHUNK_VALUES", 7)  # two rows of three per chunk
    chunked = asof.user_features_as_of(batch, queries, history=3)
    assert chunked.column("history_item_ids").num_chunks == 4
    assert chunked.to_pylist() == whole.to_pylist()
    assert whole.column("history_item_ids").to_pylist()[:3] == [["i1", "i2", "i3"], ["i0", "i1"], []]


ITEM_EVENTS = events([
    ("u1", "i1", "view", at(1), None),
    ("u1", "i1", "click", at(2), None),
    ("u2", "i1", "view", at(2), None),
    ("u2", "i1", "purchase", at(3), 3.5),
    ("u3", "i1", "like", at(3), 5.0),
    ("u3", "i2", "click", at(1), None),
    ("u4", "i1", "view", at(9), None),
])
CATALOG = pa.table({"item_id": ["i1", "i3"], "title": ["One", "Three"], "category": ["books", None],
                    "brand": ["Acorn", "Dune"], "price": [9.5, None], "description": [None, None]})


def test_item_features_exact_values():
    result = asof.item_features_as_of(ITEM_EVENTS, item_queries([("i1", at(3) + US, 4), ("i2", at(2), 3)]),
                                      catalog=CATALOG)
    assert result.schema == asof.item_as_of_schema()
    assert result.to_pylist() == [
        {
            "item_total_interactions": 5, "item_unique_users": 3,
            **counts("item", view=2, click=1, like=1, purchase=1),
            "item_avg_rating": 4.25, "item_ctr": 0.5, "item_purchase_rate": 0.2, "item_popularity": 0.75,
            "item_events_7d": 5, "item_events_30d": 5,
            "item_category": "books", "item_brand": "Acorn", "item_price": 9.5,
        },
        {
            "item_total_interactions": 1, "item_unique_users": 1, **counts("item", click=1),
            "item_avg_rating": None, "item_ctr": None, "item_purchase_rate": 0.0, "item_popularity": 1 / 3,
            "item_events_7d": 1, "item_events_30d": 1,
            "item_category": None, "item_brand": None, "item_price": None,
        },
    ]


def test_items_without_earlier_events_and_without_users_before():
    result = asof.item_features_as_of(ITEM_EVENTS, item_queries([("i1", at(1), 0), ("i3", at(5), 2)]),
                                      catalog=CATALOG).to_pylist()
    for row in result:
        assert row["item_total_interactions"] == row["item_unique_users"] == row["item_events_7d"] == 0
        assert row["item_avg_rating"] is row["item_ctr"] is row["item_purchase_rate"] is None
    assert result[0]["item_popularity"] is None  # no user before t
    assert result[1]["item_popularity"] == 0.0
    assert result[1]["item_category"] is None and result[1]["item_brand"] == "Dune"


def test_item_queries_sharing_item_and_time_keep_order_and_their_own_users_before():
    rows = [("i1", at(3), 2), ("i2", at(3), 3), ("i1", at(3), 4), ("i1", at(10), 4)]
    result = asof.item_features_as_of(ITEM_EVENTS, item_queries(rows))
    assert result.column("item_total_interactions").to_pylist() == [3, 1, 3, 6]
    assert result.column("item_popularity").to_pylist() == [1.0, 1 / 3, 0.5, 1.0]
    assert result.column("item_category").to_pylist() == [None] * 4


def test_users_before_from_first_seen_and_count_before():
    first = asof.user_first_seen(ITEM_EVENTS.take([6, 0, 4, 1, 5, 2, 3]))
    assert dict(zip(first.column("user_id").to_pylist(), first.column("first_seen").to_pylist())) == {
        "u1": at(1), "u2": at(2), "u3": at(1), "u4": at(9)}
    sorted_first = np.sort(pc.cast(first.column("first_seen"), pa.int64()).to_numpy())
    times = pc.cast(pa.array([at(1), at(1) + US, at(2), at(9) + US], schemas.TIMESTAMP), pa.int64()).to_numpy()
    assert asof.count_before(sorted_first, times).tolist() == [0, 2, 2, 4]


def test_as_of_the_cutoff_equals_the_cutoff_features():
    batch = pa.concat_tables([U1, ITEM_EVENTS])
    cutoff = at(3, 12)
    cutoff_us = int(cutoff.timestamp() * 1_000_000)
    train = train_events(batch, cutoff_us, "time", POSITIVE)
    users = features.user_features(train, cutoff_us).sort_by("user_id")
    user_rows = asof.user_features_as_of(batch, user_queries([(u, cutoff) for u in users.column("user_id").to_pylist()]),
                                         windows_days=(), history=0)
    assert user_rows.to_pylist() == users.drop_columns(["user_id"]).to_pylist()
    items = features.item_features(features.item_partials(train), users.num_rows)
    item_rows = asof.item_features_as_of(
        batch, item_queries([(i, cutoff, users.num_rows) for i in items.column("item_id").to_pylist()]),
        windows_days=())
    assert item_rows.drop_columns(["item_category", "item_brand", "item_price"]).to_pylist() == \
        items.drop_columns(["item_id"]).to_pylist()


def test_exact_range_sums_round_like_fsum():
    cases = [
        [0.1] * 10,
        [1.0, 2.0 ** -53],                   # a tie: rounds to even (1.0)
        [1.0, 2.0 ** -53, 2.0 ** -106],     # just above the tie: rounds up
        [1.0 + 2.0 ** -52, 2.0 ** -53],      # a tie from an odd last bit: rounds up
        [1e16, 1.0, -1e16],                  # cancellation
        [3.7, -3.7, 2.0 ** -1074, 5e-324],   # subnormals
        [1e300, 1e-300, -1e300],
        [4.5, 3.0, 1.5],                     # half stars (the float64 fast path)
        [-2.0, 5.0, 1.0],                    # integers (the float64 fast path)
        [],
    ]
    values = np.concatenate([np.array(c, dtype=np.float64) for c in cases])
    bounds = np.cumsum([0] + [len(c) for c in cases])
    lo, hi = bounds[:-1], bounds[1:]
    expected = [math.fsum(c) for c in cases]
    assert asof.exact_range_sums(values, lo, hi).tolist() == expected
    for case, a, b in zip(cases, lo, hi):  # each case alone, as in a batch of its own
        assert asof.exact_range_sums(np.array(case, dtype=np.float64), [0], [b - a]).tolist() == [math.fsum(case)]
    with pytest.raises(ValueError, match="finite"):
        asof.exact_range_sums(np.array([1.0, np.nan]), [0], [2])


def test_rating_means_do_not_depend_on_the_rest_of_the_batch():
    ratings = [3.7, 4.1, 2.9, 1.3]
    user = events([("u1", f"i{n}", "like", at(n), r) for n, r in enumerate(ratings)])
    others = events([("u0", "i0", "like", at(0), 1e15), ("u0", "i1", "like", at(1), 3.3)])
    query = user_queries([("u1", at(10))])
    alone = asof.user_features_as_of(user, query).column("user_avg_rating").to_pylist()
    mixed = asof.user_features_as_of(pa.concat_tables([others, user]), query).column("user_avg_rating").to_pylist()
    assert alone == mixed == [math.fsum(ratings) / 4]
