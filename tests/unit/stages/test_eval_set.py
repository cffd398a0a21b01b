from collections import defaultdict
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from recsys_ray import schemas
from recsys_ray.stages import eval_set, examples
from recsys_ray.stages.split import split_events

T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)
POSITIVE = ("click", "like", "add_to_cart", "purchase")
TYPES = ("view", *POSITIVE)
CATALOG = [f"i{n:02d}" for n in range(40)]
UNIFORM = examples.make_candidates(pa.array(CATALOG), None, "uniform", 0.75)


def cutoff_us(minutes):
    return int((T0 + timedelta(minutes=minutes)).timestamp() * 1_000_000)


def events(rows):
    """Canonical interactions from (user_id, item_id, interaction_type, minutes after T0) tuples."""
    users, items, types, times = zip(*rows)
    return pa.table({
        "user_id": list(users), "item_id": list(items), "interaction_type": list(types),
        "timestamp": pa.array([T0 + timedelta(minutes=m) for m in times], schemas.TIMESTAMP),
        "rating": pa.array([None] * len(rows), pa.float64()),
        "event_id": [f"e{n}" for n in range(len(rows))],
    }, schema=schemas.INTERACTIONS)


def brute_force(rows, strategy, cutoff_minutes):
    """{user: (relevant, seen)} written out from the definitions, user by user."""
    by_user = defaultdict(list)
    for user, item, kind, minute in rows:
        by_user[user].append((item, kind, minute))
    out = {}
    for user, user_rows in by_user.items():
        if strategy == "time":
            cutoff = cutoff_minutes
        else:
            positive_times = [m for _, kind, m in user_rows if kind in POSITIVE]
            cutoff = max(positive_times) if len(positive_times) >= 2 else float("inf")
        seen = {item for item, _, m in user_rows if m < cutoff}
        relevant = {item for item, kind, m in user_rows if m >= cutoff and kind in POSITIVE} - seen
        if relevant:
            out[user] = (sorted(relevant), sorted(seen))
    return out


def build(rows, strategy="time", cutoff_minutes=10, negatives=5, seed=1, candidates=UNIFORM):
    return eval_set.build_eval_set(events(rows), cutoff_us=cutoff_us(cutoff_minutes), strategy=strategy,
                                   positive_types=POSITIVE, candidates=candidates, negatives=negatives, seed=seed)


def as_dict(table):
    return {r["user_id"]: (r["relevant_item_ids"], r["seen_item_ids"]) for r in table.to_pylist()}


ROWS = [
    ("u0", "i00", "view", 0),
    ("u0", "i01", "click", 1),
    ("u0", "i02", "like", 10),        # at the cutoff: test, relevant
    ("u0", "i02", "purchase", 12),    # same item again: listed once
    ("u0", "i01", "purchase", 11),    # seen before the cutoff: not relevant
    ("u0", "i03", "view", 13),        # a test view is not a positive
    ("u1", "i04", "view", 2),
    ("u1", "i04", "click", 12),       # viewed before the cutoff: not relevant
    ("u2", "i05", "view", 3),         # nothing after the cutoff: no row
    ("u3", "i06", "add_to_cart", 14), # test-only user: relevant, nothing seen
    ("u3", "zz", "click", 15),        # an item outside the candidates can be relevant
]


def test_time_split_rows_follow_the_definitions():
    table = build(ROWS)
    assert table.schema == eval_set.EVAL_SET
    assert as_dict(table) == {"u0": (["i02"], ["i00", "i01"]), "u3": (["i06", "zz"], [])}
    assert as_dict(table) == brute_force(ROWS, "time", 10)
    assert table.column("user_id").to_pylist() == ["u0", "u3"]


def test_leave_last_out_uses_each_users_own_cutoff():
    rows = [
        ("a", "i00", "click", 1), ("a", "i01", "view", 2), ("a", "i02", "purchase", 50),  # cutoff 50
        ("a", "i03", "view", 60),
        ("b", "i00", "click", 5), ("b", "i00", "like", 7),    # latest positive on a seen item: no row
        ("c", "i09", "click", 3),                             # one positive: all training, no row
        ("d", "i05", "like", 4), ("d", "i06", "like", 4),     # tied latest positives: both relevant
    ]
    table = build(rows, strategy="leave_last_out")
    assert as_dict(table) == {"a": (["i02"], ["i00", "i01"]), "d": (["i05", "i06"], [])}
    assert as_dict(table) == brute_force(rows, "leave_last_out", None)


def random_rows(seed, users=30, n=400):
    rng = np.random.default_rng(seed)
    return [(f"u{u:02d}", CATALOG[i] if i < len(CATALOG) else f"x{i}", TYPES[t], int(m))
            for u, i, t, m in zip(rng.integers(0, users, n), rng.integers(0, 45, n),
                                  rng.integers(0, len(TYPES), n), rng.integers(0, 100, n))]


@pytest.mark.parametrize("strategy", ["time", "leave_last_out"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_snapshots_equal_the_brute_force(strategy, seed):
    rows = random_rows(seed)
    table = build(rows, strategy=strategy, cutoff_minutes=80)
    expected = brute_force(rows, strategy, 80)
    assert as_dict(table) == expected
    assert table.column("user_id").to_pylist() == sorted(expected)


def test_sampled_candidates_are_unseen_distinct_candidates():
    rows = random_rows(7)
    table = build(rows, negatives=8, cutoff_minutes=80)
    touched = defaultdict(set)
    for user, item, _, _ in rows:
        touched[user].add(item)
    assert table.num_rows > 10
    for row in table.to_pylist():
        sampled = row["sampled_candidate_ids"]
        assert sampled == sorted(set(sampled)), "distinct and sorted"
        assert set(sampled) <= set(CATALOG)
        assert not set(sampled) & touched[row["user_id"]], "never an item of any of the user's events"
        available = len(set(CATALOG) - touched[row["user_id"]])
        assert len(sampled) == min(8, available)


def test_sampled_candidates_do_not_depend_on_batching_or_row_order():
    rows = random_rows(4, users=40, n=600)
    whole = build(rows, negatives=6, cutoff_minutes=70)
    table = events(rows)
    shuffled = table.take(pa.array(np.random.default_rng(0).permutation(table.num_rows)))
    digit = pc.utf8_slice_codeunits(shuffled.column("user_id"), 2, 3)
    batches = [shuffled.filter(pc.equal(digit, str(d))) for d in range(10)]
    parts = [eval_set.build_eval_set(b, cutoff_us=cutoff_us(70), strategy="time", positive_types=POSITIVE,
                                     candidates=UNIFORM, negatives=6, seed=1) for b in batches]
    assert pa.concat_tables(parts).sort_by("user_id").equals(whole)


def test_sampled_candidates_follow_the_seed_and_differ_from_training_negatives():
    rows = random_rows(5, users=40, n=300)
    first = build(rows, negatives=10, seed=3, cutoff_minutes=60)
    assert build(rows, negatives=10, seed=3, cutoff_minutes=60).equals(first)
    other = build(rows, negatives=10, seed=4, cutoff_minutes=60)
    assert other.column("sampled_candidate_ids") != first.column("sampled_candidate_ids")

    labelled = examples.label_examples(events(rows), cutoff_us=cutoff_us(60), strategy="time",
                                       positive_types=POSITIVE, candidates=UNIFORM, negatives=10, seed=3)
    negatives = labelled.filter(pc.equal(labelled.column("label"), 0.0))
    same = 0
    for row in first.to_pylist():
        mine = negatives.filter(pc.equal(negatives.column("user_id"), row["user_id"]))
        for item_negatives in _groups(mine):
            same += item_negatives == set(row["sampled_candidate_ids"])
    assert same == 0


def _groups(negatives):
    groups = defaultdict(set)
    for row in negatives.to_pylist():
        groups[(row["split"], row["timestamp"])].add(row["item_id"])
    return list(groups.values())


def test_sampled_candidates_use_the_candidate_weights():
    weights = np.zeros(len(CATALOG))
    weights[:5] = 1.0  # only i00..i04 may be drawn
    weighted = examples.Candidates(pa.array(CATALOG), weights)
    table = build(random_rows(8), negatives=3, candidates=weighted, cutoff_minutes=80)
    assert table.num_rows > 0
    for row in table.to_pylist():
        assert set(row["sampled_candidate_ids"]) <= set(CATALOG[:5])


def test_a_user_who_saw_every_candidate_gets_no_samples_and_zero_asks_for_none():
    rows = [("u0", item, "view", 0) for item in CATALOG] + [("u0", "new", "click", 20)]
    table = build(rows)
    assert table.to_pylist() == [{"user_id": "u0", "relevant_item_ids": ["new"], "seen_item_ids": CATALOG,
                                  "sampled_candidate_ids": []}]
    assert build(ROWS, negatives=0).column("sampled_candidate_ids").to_pylist() == [[], []]


def test_eval_rows_take_events_with_their_split():
    split = split_events(events(ROWS), cutoff_us(10), "time", POSITIVE)
    direct = eval_set.eval_rows(split, positive_types=POSITIVE, candidates=UNIFORM, negatives=5, seed=1)
    assert direct.equals(build(ROWS))
    with pytest.raises(ValueError, match="split"):
        eval_set.eval_rows(events(ROWS), positive_types=POSITIVE, candidates=UNIFORM, negatives=5, seed=1)
    assert build([("u0", "i00", "view", 0)]).num_rows == 0
    empty = eval_set.build_eval_set(events(ROWS).slice(0, 0), cutoff_us=cutoff_us(10), strategy="time",
                                    positive_types=POSITIVE, candidates=UNIFORM, negatives=5, seed=1)
    assert empty.schema == eval_set.EVAL_SET and empty.num_rows == 0


def user_events(users):
    return pa.table({"user_id": pa.array(users, pa.string())})


def test_user_samples_stand_for_every_distinct_user_in_order():
    users = [f"u{n:03d}" for n in range(10)] * 3
    sample = eval_set.user_sample(user_events(users[::-1]), size=4)
    assert sample.schema == eval_set.USER_SAMPLE
    assert sample.column("user_id").to_pylist() == ["u000", "u003", "u006", "u009"]
    assert sample.column("users").to_pylist() == [3, 3, 3, 1]
    assert eval_set.user_sample(user_events([]), size=4).num_rows == 0
    assert eval_set.user_sample(user_events(["b", "a"]), size=10).column("users").to_pylist() == [1, 1]


@pytest.mark.parametrize("ranges", [1, 2, 3, 7])
def test_range_bounds_cut_all_partitions_users_into_ordered_ranges_of_about_equal_size(ranges):
    rng = np.random.default_rng(ranges)
    users = np.array([f"user-{n:05d}" for n in rng.permutation(3000)])
    partitions = np.array_split(users, 5)
    samples = pa.concat_tables([eval_set.user_sample(user_events(list(p)), size=50) for p in partitions])
    assert sum(samples.column("users").to_pylist()) == 3000
    bounds = eval_set.range_bounds(samples, ranges)
    assert list(bounds) == sorted(set(bounds)) and len(bounds) == ranges - 1
    which = eval_set.range_of(pa.array(users), bounds)
    sizes = np.bincount(which, minlength=ranges)
    assert sizes.sum() == 3000 and sizes.max() - sizes.min() <= 3000 * 0.05
    ordered = sorted(users)
    assert list(eval_set.range_of(pa.array(ordered), bounds)) == sorted(eval_set.range_of(pa.array(ordered), bounds))


def test_range_of_puts_a_bound_in_the_range_it_starts():
    assert list(eval_set.range_of(pa.array(["a", "b", "c", "d"]), ("b", "d"))) == [0, 1, 1, 2]
    assert list(eval_set.range_of(pa.array(["a"]), ())) == [0]
    assert eval_set.range_bounds(eval_set.USER_SAMPLE.empty_table(), 4) == ()
