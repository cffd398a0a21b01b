"""Heavy items: detection, time slices at bin edges, the exact state carried into each slice,
and queries at t − N days routed to the slice that holds t − N days."""

from __future__ import annotations

import random
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from recsys_ray import schemas
from recsys_ray.stages import asof, heavy, split, training_rows
from recsys_ray.stages.split import timestamp_micros
from tests.unit.stages import test_asof_properties as brute

DAY = brute.DAY
BASE = brute.BASE


def events_of(rows):
    """rows: (user, item, type, day offset, rating)."""
    return brute.event_table([(u, i, t, BASE + int(d * DAY), r) for u, i, t, d, r in rows])


def random_rows(rng, n=300):
    users, items = [f"u{k}" for k in range(12)], ["hot"] * 6 + [f"i{k}" for k in range(5)]
    return [(rng.choice(users), rng.choice(items), rng.choice(schemas.INTERACTION_TYPES),
             rng.randrange(0, 40 * 4) / 4, None if rng.random() < 0.3 else round(rng.uniform(0.5, 5), 1))
            for _ in range(n)]


def plan_for(table, limit):
    ts = timestamp_micros(table)
    edges = split.bin_edges(int(ts.min()), int(ts.max()))
    ids = tuple(sorted(heavy.candidate_counts(table, 1)["item_id"].to_pylist()))
    return heavy.plan_slices(heavy.time_histograms(table, ids, edges), edges, limit), edges


def test_candidates_are_the_items_with_at_least_min_events_here():
    table = events_of([("u0", "a", "view", 0, None)] * 3 + [("u1", "b", "view", 1, None)])
    got = heavy.candidate_counts(table, 2)
    assert got.schema == heavy.CANDIDATES and got.to_pylist() == [{"item_id": "a", "events": 3}]
    assert heavy.candidate_counts(table.slice(0, 0), 1).num_rows == 0


def test_slices_start_at_bin_edges_hold_at_most_the_limit_plus_one_bin_and_never_split_a_time():
    rng = random.Random(3)
    table = events_of(random_rows(rng, 600))
    limit = 100
    plan, edges = plan_for(table, limit)
    counts = pc.value_counts(table["item_id"]).to_pylist()
    assert set(plan.item_ids) == {c["values"] for c in counts if c["counts"] > limit} == {"hot"}
    starts = plan.starts[plan.item_ids.index("hot")]
    assert list(starts) == sorted(set(starts)) and set(starts) <= set(edges.tolist())
    hot = table.filter(pc.equal(table["item_id"], "hot"))
    ts = timestamp_micros(hot)
    slices = plan.slices(hot["item_id"], ts)
    assert slices.min() == 0 and slices.max() == len(starts)
    biggest_bin = np.bincount(np.searchsorted(edges, ts, side="right") - 1).max()
    assert np.bincount(slices).max() <= limit + biggest_bin
    for t in np.unique(ts):  # events at one time share a slice
        assert len(set(slices[ts == t])) == 1
    # an event exactly at a slice's start belongs to that slice
    at_start = plan.slices(pa.array(["hot", "hot", "cold"]), np.array([starts[0], starts[0] - 1, starts[0]]))
    assert at_start.tolist() == [1, 0, 0]
    assert plan.slice_start("hot", 0) == np.iinfo(np.int64).min and plan.slice_start("hot", 1) == starts[0]


def test_no_item_over_the_limit_means_no_heavy_items():
    table = events_of([("u0", "a", "view", d, None) for d in range(5)])
    plan, _ = plan_for(table, 5)
    assert not plan and plan == heavy.NO_HEAVY_ITEMS and plan.slice_count == 0


def test_each_slice_carries_the_exact_state_of_every_event_before_its_start():
    rng = random.Random(5)
    rows = random_rows(rng, 500)
    table = events_of(rows)
    plan, _ = plan_for(table, 30)
    # summaries of any split of the users add up to the same carry
    users = table["user_id"].to_pylist()
    halves = [table.filter(pa.array([u in ("u0", "u1", "u2") for u in users])),
              table.filter(pa.array([u not in ("u0", "u1", "u2") for u in users]))]
    carry = heavy.carry_table(pa.concat_tables([heavy.slice_summaries(h, plan) for h in halves]), plan)
    assert carry.equals(heavy.carry_table(heavy.slice_summaries(table, plan), plan))
    assert carry.schema == heavy.SLICE_CARRY and carry.num_rows == plan.slice_count
    for row in carry.to_pylist():
        before = [r for r in rows if r[1] == row["item_id"] and BASE + int(r[3] * DAY) < row["slice_start"]]
        assert row["total"] == len(before)
        assert row["unique_users"] == len({r[0] for r in before})
        for name in schemas.INTERACTION_TYPES:
            assert row[name] == sum(r[2] == name for r in before)
        rated = [r[4] for r in before if r[4] is not None]
        assert row["rating_count"] == len(rated)
        assert sum(map(Fraction, row["rating_parts"]), Fraction(0)) == sum(map(Fraction, rated), Fraction(0))


def test_exact_totals_and_parts_keep_every_bit():
    values = np.array([0.1, 0.2, 0.3, 1e16, -1e16, 3.7, 2.0 ** -60], dtype=np.float64)
    lo, hi = np.array([0, 0, 2, 6]), np.array([3, 7, 5, 7])
    totals = asof.exact_totals(values, lo, hi)
    for total, a, b in zip(totals, lo, hi):
        assert total == sum(map(Fraction, values[a:b]), Fraction(0))
        parts = asof.exact_parts(total)
        assert sum(map(Fraction, parts), Fraction(0)) == total
        assert asof.exact_range_sums(np.array(parts), np.array([0]), np.array([len(parts)]))[0] == float(total)
    assert asof.exact_parts(Fraction(0)) == []
    assert asof.exact_totals(np.zeros(3), np.array([0]), np.array([3])) == [Fraction(0)]


def test_pair_firsts_mark_one_earliest_event_of_each_user_item_pair():
    table = events_of([("u0", "a", "view", 2, None), ("u0", "a", "click", 1, None), ("u0", "b", "view", 3, None),
                       ("u1", "a", "view", 1, None), ("u1", "a", "like", 1, None)])
    firsts = asof.pair_firsts(table)
    assert firsts.tolist()[:4] == [False, True, True, True] or firsts.tolist()[:4] == [False, True, True, False]
    assert firsts[3] != firsts[4] and firsts.sum() == 3


def test_item_features_from_a_slice_and_its_carry_equal_those_from_every_event():
    rng = random.Random(11)
    rows = random_rows(rng, 400)
    table = events_of(rows)
    plan, _ = plan_for(table, 25)
    carry = heavy.carry_table(heavy.slice_summaries(table, plan), plan)
    hot = table.filter(pc.equal(table["item_id"], "hot"))
    hot = hot.append_column(asof.FIRST_USER_EVENT, pa.array(asof.pair_firsts(table)[
        pc.equal(table["item_id"], "hot").to_numpy(zero_copy_only=False)]))
    slices = plan.slices(hot["item_id"], timestamp_micros(hot))
    times = sorted(set(timestamp_micros(hot).tolist()))
    queries = pa.table({"item_id": ["hot"] * len(times), "timestamp": brute.timestamps(times),
                        "users_before": pa.array(np.full(len(times), 7, np.int64))})
    query_slices = plan.slices(queries["item_id"], np.array(times))
    whole = asof.item_features_as_of(hot.drop_columns([asof.FIRST_USER_EVENT]), queries, windows_days=())
    for slice_index in range(plan.slice_count):
        mine = hot.filter(pa.array(slices == slice_index))
        asked = queries.filter(pa.array(query_slices == slice_index))
        own = carry.filter(pc.equal(carry["slice"], slice_index)).drop_columns(["slice"])
        got = asof.item_features_as_of(mine, asked, windows_days=(), carry=own if slice_index else None)
        assert got.equals(whole.filter(pa.array(query_slices == slice_index))), slice_index
    # A slice's carry needs the slice's own events: queries without them are refused, not answered from zero.
    last = carry.filter(pc.and_(pc.equal(carry["item_id"], "hot"), pc.equal(carry["slice"], 1))).drop_columns(["slice"])
    assert last.num_rows == 1
    with pytest.raises(ValueError, match="carried item has queries but no events"):
        asof.item_features_as_of(hot.slice(0, 0), queries.slice(0, 1), windows_days=(), carry=last)


def test_window_queries_go_to_the_slice_that_holds_t_minus_n_days():
    plan = heavy.HeavyItems(("hot",), ((BASE + 10 * DAY, BASE + 12 * DAY),))
    times = [BASE + 11 * DAY, BASE + 13 * DAY, BASE + 20 * DAY]
    queries = pa.table({"item_id": ["hot", "hot", "cold"], "timestamp": brute.timestamps(times),
                        "split": ["train"] * 3, "_shard": pa.array([0, 0, 0], pa.int32())})
    queries = queries.append_column("_slice", pa.array(plan.slices(queries["item_id"], np.array(times))))
    assert queries["_slice"].to_pylist() == [1, 2, 0]
    routed = heavy.window_queries(queries, plan, (1, 2))
    # 11d: 10d is slice 1 (no query), 9d slice 0; 13d: 12d slice 2 (none), 11d slice 1; cold never
    assert sorted(zip(routed["timestamp"].to_pylist(), routed["_window"].to_pylist(), routed["_slice"].to_pylist())) \
        == sorted([(queries["timestamp"][0].as_py(), 2, 0), (queries["timestamp"][1].as_py(), 2, 1)])
    assert heavy.window_queries(queries, heavy.NO_HEAVY_ITEMS, (1, 2)).num_rows == 0


def test_combined_item_parts_add_the_earlier_slices_window_counts():
    schema = training_rows.RowOptions(cutoff_us=0, strategy="time", positive_types=("click",), candidates=None,
                                      negatives=0, seed=0, windows=(7,)).item_rows_schema
    key = {"item_id": "hot", "timestamp": brute.timestamps([BASE])[0].as_py(), "split": "train", "_shard": 0}
    own = {**key, **{f.name: None for f in schema if f.name not in key}, "item_total_interactions": 9,
           "item_unique_users": 3, "item_events_7d": 9}
    part = {**key, **{f.name: None for f in schema if f.name not in key}, "item_events_7d": -4}
    other = {**own, "item_id": "cold", "item_events_7d": 2}
    table = pa.Table.from_pylist([part, own, other], schema=schema)
    got = training_rows.combine_item_parts(table, (7,))
    assert [(r["item_id"], r["item_events_7d"], r["item_total_interactions"]) for r in got.to_pylist()] == \
        [("hot", 5, 9), ("cold", 2, 9)]
    alone = pa.Table.from_pylist([own], schema=schema)
    assert training_rows.combine_item_parts(alone, (7,)) is alone
