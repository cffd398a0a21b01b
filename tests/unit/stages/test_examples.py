import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from recsys_ray import schemas
from recsys_ray.stages import examples
from recsys_ray.stages.split import assign_split

T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)
POSITIVE = ("click", "like", "add_to_cart", "purchase")
CATALOG = [f"i{n:02d}" for n in range(20)]
CUTOFF_MIN = 10
CUTOFF_US = int((T0 + timedelta(minutes=CUTOFF_MIN)).timestamp() * 1_000_000)


def at(minutes):
    return T0 + timedelta(minutes=minutes)


def events(rows):
    """Canonical interactions from (user_id, item_id, interaction_type, minutes after T0) tuples."""
    users, items, types, times = zip(*rows)
    return pa.table(
        {
            "user_id": list(users),
            "item_id": list(items),
            "interaction_type": list(types),
            "timestamp": pa.array([at(m) for m in times], schemas.TIMESTAMP),
            "rating": pa.array([None] * len(rows), pa.float64()),
            "event_id": [f"e{n}" for n in range(len(rows))],
        },
        schema=schemas.INTERACTIONS,
    )


ROWS = [
    ("u0", "i00", "view", 0),
    ("u0", "i01", "click", 1),
    ("u0", "i01", "purchase", 5),
    ("u0", "i02", "like", 10),         # test
    ("u0", "zz", "view", 2),           # not a candidate
    ("u1", "i03", "add_to_cart", 2),
    ("u1", "i04", "click", 12),        # test
    ("u1", "i05", "view", 3),
    ("u2", "i06", "purchase", 4),
    ("u2", "i07", "click", 6),
    ("u2", "i06", "click", 11),        # test
    ("u3", "i08", "view", 1),          # no positives
    *[("u4", item, "view", 0) for item in CATALOG[:18]],
    ("u4", "i00", "click", 7),         # u4 has not seen i18 and i19
    *[("u5", item, "view", 0) for item in CATALOG],
    ("u5", "i10", "click", 8),         # u5 has seen every candidate
]
EVENTS = events(ROWS)
UNIFORM = examples.make_candidates(pa.array(CATALOG), None, "uniform", 0.75)


def with_split(table):
    return assign_split(table, CUTOFF_US)


def positives_of(table):
    return examples.select_positives(with_split(table), POSITIVE)


def seen_items(table):
    seen = defaultdict(set)
    for user, item in zip(table["user_id"].to_pylist(), table["item_id"].to_pylist()):
        seen[user].add(item)
    return seen


def rows_of(table, columns=("user_id", "item_id", "split", "timestamp")):
    return sorted(tuple(r[c] for c in columns) for r in table.to_pylist())


def negatives_by_positive(negatives):
    """Negatives grouped by their positive's (user, split, timestamp), in output order."""
    groups = defaultdict(list)
    for r in negatives.to_pylist():
        groups[(r["user_id"], r["split"], r["timestamp"])].append(r["item_id"])
    return groups


# select_positives


def test_select_positives_one_latest_per_user_item_split():
    table = with_split(events([
        ("u", "a", "click", 1),
        ("u", "a", "purchase", 3),
        ("u", "a", "view", 5),           # later, but not positive
        ("u", "a", "like", 12),          # same pair, test split
        ("u", "a", "add_to_cart", 11),
        ("u", "b", "view", 2),           # only a view: no positive
        ("v", "a", "like", 4),
    ]))
    result = examples.select_positives(table, POSITIVE)
    assert result.column_names == ["user_id", "item_id", "split", "timestamp"]
    assert result.schema.field("timestamp").type == schemas.TIMESTAMP
    assert rows_of(result) == [("u", "a", "test", at(12)), ("u", "a", "train", at(3)), ("v", "a", "train", at(4))]


def test_select_positives_respects_positive_types():
    table = with_split(events([("u", "a", "click", 1), ("u", "b", "view", 2), ("u", "c", "purchase", 3)]))
    assert rows_of(examples.select_positives(table, ("purchase",))) == [("u", "c", "train", at(3))]
    assert rows_of(examples.select_positives(table, ("view", "click"))) == [
        ("u", "a", "train", at(1)), ("u", "b", "train", at(2))]


# make_candidates


def test_make_candidates_sorts_ids_and_weights_popularity():
    ids = pa.array(["c", "a", "d", "b"])
    popularity = np.array([16.0, 1.0, 0.0, 81.0])
    candidates = examples.make_candidates(ids, popularity, "popularity", 0.75)
    assert candidates.item_ids.to_pylist() == ["a", "b", "c", "d"]
    assert candidates.size == 4
    np.testing.assert_allclose(candidates.weights, [1.0, 27.0, 8.0, 0.0])
    uniform = examples.make_candidates(ids, popularity, "uniform", 0.75)
    assert uniform.item_ids.to_pylist() == ["a", "b", "c", "d"]
    assert uniform.weights.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_make_candidates_edge_cases():
    ids = pa.chunked_array([["y", "x"], ["z"]])
    with np.errstate(divide="ignore"):
        candidates = examples.make_candidates(ids, np.array([2.0, 0.0, 4.0]), "popularity", -1.0)
    assert isinstance(candidates.item_ids, pa.Array)
    assert candidates.item_ids.to_pylist() == ["x", "y", "z"]
    assert candidates.weights.tolist() == [0.0, 0.5, 0.25]  # 0 ** -1 is not finite: never drawn
    with pytest.raises(ValueError, match="popularity"):
        examples.make_candidates(ids, None, "popularity", 0.75)


def test_candidate_codes():
    assert UNIFORM.codes(pa.array(["i03", "nope", "i00", "i19"])).tolist() == [3, -1, 0, 19]


# sample_negatives


def test_sample_negatives_invariants():
    positives = positives_of(EVENTS)
    k = 3
    negatives = examples.sample_negatives(positives, with_split(EVENTS), UNIFORM, k, seed=42)
    assert negatives.column_names == ["user_id", "item_id", "split", "timestamp"]
    assert negatives.schema.field("timestamp").type == schemas.TIMESTAMP
    seen = seen_items(EVENTS)
    groups = negatives_by_positive(negatives)
    expected_counts = {"u0": k, "u1": k, "u2": k, "u4": 2, "u5": 0}
    for p in positives.to_pylist():
        drawn = groups.get((p["user_id"], p["split"], p["timestamp"]), [])
        assert len(drawn) == expected_counts[p["user_id"]]
        assert len(set(drawn)) == len(drawn)
        assert not set(drawn) & seen[p["user_id"]]
        assert set(drawn) <= set(CATALOG)
    assert negatives.num_rows == sum(expected_counts[u] for u in positives["user_id"].to_pylist())


def test_sample_negatives_excludes_items_seen_in_either_split_with_any_type():
    # u sees i00 as a view in the test window, i01 as a train positive, i02 as a test positive;
    # with a catalog of 5 items and k = 2, only i03 and i04 can be drawn.
    table = events([("u", "i00", "view", 30), ("u", "i01", "click", 1), ("u", "i02", "like", 20)])
    candidates = examples.make_candidates(pa.array(CATALOG[:5]), None, "uniform", 1.0)
    for seed in range(20):
        negatives = examples.sample_negatives(positives_of(table), with_split(table), candidates, 2, seed)
        assert sorted(negatives["item_id"].to_pylist()) == ["i03", "i03", "i04", "i04"]


def test_sample_negatives_deterministic_per_seed():
    positives = positives_of(EVENTS)
    first = examples.sample_negatives(positives, EVENTS, UNIFORM, 4, seed=7)
    again = examples.sample_negatives(positives, EVENTS, UNIFORM, 4, seed=7)
    other = examples.sample_negatives(positives, EVENTS, UNIFORM, 4, seed=8)
    assert first.equals(again)
    assert first.num_rows == other.num_rows
    assert first["item_id"].to_pylist() != other["item_id"].to_pylist()


def test_sample_negatives_same_rows_whatever_the_user_batches():
    positives = positives_of(EVENTS)
    whole = examples.sample_negatives(positives, EVENTS, UNIFORM, 4, seed=3)
    for groups in ([["u0", "u3"], ["u1", "u4"], ["u2", "u5"]], [["u5", "u0", "u1"], ["u2", "u3", "u4"]]):
        parts = []
        for users in groups:
            batch = EVENTS.filter(pc.is_in(EVENTS["user_id"], pa.array(users)))
            parts.append(examples.sample_negatives(positives_of(batch), batch, UNIFORM, 4, seed=3))
        assert rows_of(pa.concat_tables(parts)) == rows_of(whole)
    # The order of the positives does not matter either.
    reversed_positives = positives.take(pa.array(range(positives.num_rows - 1, -1, -1)))
    assert rows_of(examples.sample_negatives(reversed_positives, EVENTS, UNIFORM, 4, seed=3)) == rows_of(whole)


@pytest.mark.timeout(10)
def test_sample_negatives_shortfall():
    positives = positives_of(EVENTS)
    start = time.perf_counter()
    negatives = examples.sample_negatives(positives, EVENTS, UNIFORM, 5, seed=1)
    assert time.perf_counter() - start < 5
    groups = negatives_by_positive(negatives)
    assert sorted(groups[("u4", "train", at(7))]) == ["i18", "i19"]
    assert ("u5", "train", at(8)) not in groups
    assert Counter(negatives["user_id"].to_pylist()) == {"u0": 10, "u1": 10, "u2": 15, "u4": 2}


@pytest.mark.timeout(10)
def test_sample_negatives_user_who_has_seen_everything_returns_nothing_promptly():
    catalog = [f"c{n:03d}" for n in range(60)]
    table = events([("u", item, "click", n % 9) for n, item in enumerate(catalog)])
    candidates = examples.make_candidates(pa.array(catalog), None, "uniform", 1.0)
    positives = positives_of(table)
    assert positives.num_rows == 60
    start = time.perf_counter()
    negatives = examples.sample_negatives(positives, table, candidates, 10, seed=0)
    assert time.perf_counter() - start < 5
    assert negatives.num_rows == 0
    assert negatives.column_names == ["user_id", "item_id", "split", "timestamp"]


def test_sample_negatives_draws_only_candidates_and_larger_k_than_first_round():
    # A catalog of 6 with k = 4 forces duplicate draws and later rounds for most positives.
    catalog = CATALOG[:6]
    table = events([("u", "i00", "click", 1), ("u", "x-not-in-catalog", "click", 2), ("v", "i05", "like", 3)])
    candidates = examples.make_candidates(pa.array(catalog), None, "uniform", 1.0)
    negatives = examples.sample_negatives(positives_of(table), table, candidates, 4, seed=5)
    groups = negatives_by_positive(negatives)
    assert len(groups) == 3
    for (user, _, _), drawn in groups.items():
        assert len(drawn) == 4 and len(set(drawn)) == 4
        assert set(drawn) <= set(catalog) - seen_items(table)[user]


def test_sample_negatives_never_draws_zero_weight_items():
    popularity = np.array([5, 1, 2, 0, 4, 3, 1, 2, 6, 0, 2, 1, 3, 4, 1, 0, 2, 3, 1, 2], dtype=np.float64)
    candidates = examples.make_candidates(pa.array(CATALOG), popularity, "popularity", 0.75)
    zero = {item for item, w in zip(CATALOG, candidates.weights) if w == 0}
    assert zero == {"i03", "i09", "i15"}
    table = events([(f"w{n}", CATALOG[n % 5], "click", n % 10) for n in range(60)])
    negatives = examples.sample_negatives(positives_of(table), table, candidates, 6, seed=11)
    assert negatives.num_rows == 60 * 6
    assert not set(negatives["item_id"].to_pylist()) & zero


def test_sample_negatives_user_who_has_seen_every_weighted_item_gets_none():
    candidates = examples.make_candidates(pa.array(["a", "b", "c", "d"]), np.array([2.0, 0.0, 3.0, 0.0]),
                                          "popularity", 0.75)
    table = events([("u", "a", "click", 1), ("u", "c", "view", 2)])
    assert examples.sample_negatives(positives_of(table), table, candidates, 2, seed=0).num_rows == 0


def test_sample_negatives_popularity_favours_popular_items():
    candidates = examples.make_candidates(pa.array(["a", "b", "c"]), np.array([1.0, 9.0, 90.0]), "popularity", 1.0)
    table = events([(f"w{n}", "z", "click", 1) for n in range(400)])
    counts = Counter(examples.sample_negatives(positives_of(table), table, candidates, 1, seed=2)["item_id"].to_pylist())
    assert counts["c"] > counts["b"] > counts["a"]
    assert 320 < counts["c"] < 395


def test_sample_negatives_weights_that_sum_to_the_catalog_size():
    candidates = examples.make_candidates(pa.array(["a", "b", "c"]), np.array([1.0, 0.0, 2.0]), "popularity", 1.0)
    table = events([(f"w{n}", "z", "click", 1) for n in range(300)])
    drawn = Counter(examples.sample_negatives(positives_of(table), table, candidates, 1, seed=0)["item_id"].to_pylist())
    assert drawn["b"] == 0
    assert drawn["c"] > drawn["a"]


def test_sample_negatives_of_nothing():
    positives = positives_of(EVENTS)
    assert examples.sample_negatives(positives, EVENTS, UNIFORM, 0, seed=1).num_rows == 0
    assert examples.sample_negatives(positives.slice(0, 0), EVENTS, UNIFORM, 3, seed=1).num_rows == 0
    no_weight = examples.make_candidates(pa.array(["a", "b"]), np.array([0.0, 0.0]), "popularity", 1.0)
    assert examples.sample_negatives(positives, EVENTS, no_weight, 3, seed=1).num_rows == 0


def test_sample_negatives_on_random_data():
    rng = np.random.default_rng(0)
    catalog = [f"r{n:02d}" for n in range(40)]
    rows = [(f"user{u}", catalog[i], ["view", "click", "purchase"][t], int(m))
            for u, i, t, m in zip(rng.integers(0, 25, 300), rng.integers(0, 40, 300), rng.integers(0, 3, 300),
                                  rng.integers(0, 20, 300))]
    table = events(rows)
    candidates = examples.make_candidates(pa.array(catalog), rng.integers(0, 5, 40).astype(float), "popularity", 0.5)
    positives = positives_of(table)
    negatives = examples.sample_negatives(positives, table, candidates, 5, seed=9)
    seen = seen_items(table)
    allowed = {item for item, w in zip(candidates.item_ids.to_pylist(), candidates.weights) if w > 0}
    groups = negatives_by_positive(negatives)
    # Positives of one user in one split may share a timestamp: count per (user, split, timestamp).
    per_key = Counter((p["user_id"], p["split"], p["timestamp"]) for p in positives.to_pylist())
    for key, n_positives in per_key.items():
        drawn = groups.get(key, [])
        expected = min(5, len(allowed - seen[key[0]]))
        assert len(drawn) == expected * n_positives
        assert set(drawn) <= allowed - seen[key[0]]
        if n_positives == 1:
            assert len(set(drawn)) == len(drawn)


# count_positives


def test_count_positives_exact():
    counts = examples.count_positives(EVENTS, cutoff_us=CUTOFF_US, strategy="time", positive_types=POSITIVE)
    assert dict(zip(counts["split"].to_pylist(), counts["positives"].to_pylist())) == {"train": 6, "test": 3}
    empty = examples.count_positives(EVENTS.slice(0, 0), cutoff_us=CUTOFF_US, strategy="time",
                                     positive_types=POSITIVE)
    assert empty.num_rows == 0 and empty.column_names == ["split", "positives"]


# assign_shards and order_shard


def shard_rows(n=240):
    rng = np.random.default_rng(4)
    return pa.table({
        "user_id": [f"u{v}" for v in rng.integers(0, 30, n)],
        "item_id": [f"i{n}" for n in range(n)],
        "label": pa.array(rng.integers(0, 2, n).astype(np.float32)),
        "timestamp": pa.array([at(int(m)) for m in rng.integers(0, 1000, n)], schemas.TIMESTAMP),
        "split": ["test" if v else "train" for v in rng.integers(0, 2, n)],
        "user_n_view": pa.array(rng.integers(0, 9, n)),
    })


def keyed(table):
    return {(r["user_id"], r["item_id"], r["split"]): (r["_shard"], r["_order"]) for r in table.to_pylist()}


def test_assign_shards_is_deterministic_and_independent_of_row_order():
    rows = shard_rows()
    shards = {"train": 4, "test": 3}
    first = examples.assign_shards(rows, shards, seed=5)
    assert first.column_names == rows.column_names + ["_shard", "_order"]
    assert first.schema.field("_shard").type == pa.int32()
    assert first.schema.field("_order").type == pa.int64()
    permutation = np.random.default_rng(1).permutation(rows.num_rows)
    shuffled = examples.assign_shards(rows.take(pa.array(permutation)), shards, seed=5)
    halves = pa.concat_tables([examples.assign_shards(rows.slice(0, 100), shards, seed=5),
                               examples.assign_shards(rows.slice(100), shards, seed=5)])
    assert keyed(first) == keyed(shuffled) == keyed(halves)
    other = examples.assign_shards(rows, shards, seed=6)
    assert keyed(other) != keyed(first)


def test_assign_shards_spreads_rows_over_each_splits_shards():
    first = examples.assign_shards(shard_rows(), {"train": 4, "test": 3}, seed=5).to_pylist()
    train = Counter(r["_shard"] for r in first if r["split"] == "train")
    test = Counter(r["_shard"] for r in first if r["split"] == "test")
    assert set(train) == {0, 1, 2, 3}
    assert set(test) == {0, 1, 2}
    assert min(train.values()) >= 10 and min(test.values()) >= 10
    single = examples.assign_shards(shard_rows(), {"train": 1}, seed=5)
    assert set(single["_shard"].to_pylist()) == {0}


def test_order_shard_same_order_whatever_the_input_order():
    rows = examples.assign_shards(shard_rows(), {"train": 1, "test": 1}, seed=5)
    ordered = examples.order_shard(rows)
    assert ordered.column_names == shard_rows().column_names
    assert ordered.num_rows == rows.num_rows
    expected_items = [r["item_id"] for r in sorted(rows.to_pylist(), key=lambda r: r["_order"])]
    assert ordered["item_id"].to_pylist() == expected_items
    for seed in range(3):
        permutation = np.random.default_rng(seed).permutation(rows.num_rows)
        assert examples.order_shard(rows.take(pa.array(permutation))).equals(ordered)


def test_order_shard_breaks_equal_order_keys_by_row_values():
    rows = pa.table({
        "user_id": ["b", "a", "a", "c", "a"],
        "item_id": ["x", "y", "x", "x", "x"],
        "label": pa.array([1, 0, 0, 1, 1], pa.float32()),
        "timestamp": pa.array([at(1)] * 5, schemas.TIMESTAMP),
        "split": ["train"] * 5,
        "_shard": pa.array([0] * 5, pa.int32()),
        "_order": pa.array([7, 7, 7, -3, 7], pa.int64()),
    })
    expected = [("c", "x", 1.0), ("a", "x", 0.0), ("a", "x", 1.0), ("a", "y", 0.0), ("b", "x", 1.0)]
    for permutation in ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]):
        ordered = examples.order_shard(rows.take(pa.array(permutation)))
        assert "_shard" not in ordered.column_names and "_order" not in ordered.column_names
        assert list(zip(ordered["user_id"].to_pylist(), ordered["item_id"].to_pylist(),
                        ordered["label"].to_pylist())) == expected


def test_shard_groups_cover_every_row_once_by_split_and_shard():
    rows = pa.table({"split": ["test", "train", "train", "test", "train"], "_shard": [0, 1, 0, 0, 1],
                     "label": [1.0, 0.0, 1.0, 0.0, 1.0]})
    groups = [(split_name, shard, part["label"].to_pylist()) for split_name, shard, part in
              examples.shard_groups(rows)]
    assert groups == [("test", 0, [1.0, 0.0]), ("train", 0, [1.0]), ("train", 1, [0.0, 1.0])]
    assert list(examples.shard_groups(rows.slice(0, 0))) == []


def test_rows_already_by_shard_are_not_copied_again():
    rows = pa.table({"split": ["test", "train", "train", "test", "train"], "_shard": [0, 1, 0, 0, 1],
                     "label": [1.0, 0.0, 1.0, 0.0, 1.0]})
    ordered = examples.by_shard(rows)
    assert ordered["label"].to_pylist() == [1.0, 0.0, 1.0, 0.0, 1.0]  # order within a shard kept
    assert list(zip(ordered["split"].to_pylist(), ordered["_shard"].to_pylist())) == [
        ("test", 0), ("test", 0), ("train", 0), ("train", 1), ("train", 1)]
    assert examples.by_shard(ordered) is ordered


def test_shard_keys_order_rows_as_split_then_shard():
    rng = np.random.default_rng(3)
    splits = rng.choice(["train", "test", "eval"], 500)
    rows = pa.table({"split": splits, "_shard": pa.array(rng.integers(0, 40, 500), pa.int32())})
    expected = pc.sort_indices(rows, sort_keys=[("split", "ascending"), ("_shard", "ascending")]).to_numpy()
    assert np.argsort(examples.shard_keys(rows), kind="stable").tolist() == expected.tolist()
    chunked = pa.concat_tables([rows.slice(0, 200), rows.slice(200)])
    assert examples.shard_keys(chunked).tolist() == examples.shard_keys(rows).tolist()
