from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from recsys_ray import schemas
from recsys_ray.stages import split

T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)
T0_US = 1_709_251_200_000_000
POSITIVE = ("click", "like", "add_to_cart", "purchase")


def at(minutes):
    return T0 + timedelta(minutes=minutes)


def us(minutes):
    return T0_US + minutes * 60_000_000


def events(rows):
    """Events from (user_id, item_id, interaction_type, minutes after T0) tuples."""
    users, items, types, times = zip(*rows) if rows else ((), (), (), ())
    return pa.table(
        {
            "user_id": pa.array(users, pa.string()),
            "item_id": pa.array(items, pa.string()),
            "interaction_type": pa.array(types, pa.string()),
            "timestamp": pa.array([at(m) for m in times], schemas.TIMESTAMP),
        }
    )


def micros_table(values):
    return pa.table({"timestamp": pa.array(np.asarray(values, dtype=np.int64), pa.int64()).cast(schemas.TIMESTAMP)})


def test_timestamp_micros_of_utc_timestamps():
    table = events([("u", "i", "view", 0), ("u", "i", "view", 1), ("u", "i", "view", -60 * 24)])
    result = split.timestamp_micros(table)
    assert result.dtype == np.int64
    assert result.tolist() == [T0_US, T0_US + 60_000_000, T0_US - 86_400_000_000]


def test_timestamp_micros_of_other_units_and_chunks():
    ms = pa.array([1_000, 2_500], pa.timestamp("ms", tz="UTC"))
    chunked = pa.chunked_array([ms.slice(0, 1), ms.slice(1, 1)])
    assert split.timestamp_micros(pa.table({"timestamp": chunked})).tolist() == [1_000_000, 2_500_000]
    naive = pa.array([datetime(1970, 1, 2)], pa.timestamp("s"))
    assert split.timestamp_micros(pa.table({"timestamp": naive})).tolist() == [86_400_000_000]


@pytest.mark.parametrize(
    ("total", "fraction", "rank"),
    [(10, 0.1, 9), (10, 0.2, 8), (100, 0.1, 90), (7, 0.5, 3), (1, 0.1, 0), (3, 0.0, 2), (3, 1.0, 0), (5, 0.99, 0)],
)
def test_quantile_rank(total, fraction, rank):
    assert split.quantile_rank(total, fraction) == rank


@pytest.mark.parametrize(("total", "fraction", "rank"), [(90, 0.3, 63), (10, 0.9, 1), (5, 0.8, 1)])
def test_quantile_rank_is_exact_for_decimal_fractions(total, fraction, rank):
    assert split.quantile_rank(total, fraction) == rank


def test_time_summary():
    table = micros_table([50, 10, 30])
    assert split.time_summary(table).to_pylist() == [{"count": 3, "min": 10, "max": 50}]


def test_time_summary_of_empty_batch():
    summary = split.time_summary(micros_table([]))
    assert summary.to_pylist() == [{"count": 0, "min": None, "max": None}]
    assert summary.schema.field("min").type == pa.int64()


def test_bin_edges_cover_the_range():
    edges = split.bin_edges(10, 50, bins=4)
    assert edges.dtype == np.int64
    assert edges.tolist() == [10, 20, 30, 40, 51]
    # Fewer distinct integers than bins: edges collapse to unique values.
    assert split.bin_edges(5, 5, bins=8).tolist() == [5, 6]
    assert split.bin_edges(0, 2, bins=16).tolist() == [0, 1, 2, 3]


def test_timestamp_histogram_counts_per_bin():
    edges = np.array([10, 20, 30, 40, 51], dtype=np.int64)
    hist = split.timestamp_histogram(micros_table([10, 19, 20, 39, 40, 50, 50]), edges)
    assert hist.column("counts").to_pylist() == [[2, 1, 1, 3]]
    empty = split.timestamp_histogram(micros_table([]), edges)
    assert empty.column("counts").to_pylist() == [[0, 0, 0, 0]]


def test_values_in_range_is_half_open():
    table = micros_table([5, 10, 15, 20, 25])
    assert split.values_in_range(table, 10, 20).column("ts").to_pylist() == [10, 15]


def test_locate_rank():
    counts = np.array([2, 0, 3, 1])
    assert split.locate_rank(counts, 0) == (0, 0)
    assert split.locate_rank(counts, 1) == (0, 0)
    assert split.locate_rank(counts, 2) == (2, 2)
    assert split.locate_rank(counts, 4) == (2, 2)
    assert split.locate_rank(counts, 5) == (3, 5)


def exact_quantile(batches, test_fraction, bins):
    """The cutoff the build computes from per-batch summaries, histograms and one bin's values."""
    summaries = pa.concat_tables([split.time_summary(b) for b in batches])
    counts = summaries.column("count").to_numpy()
    total = int(counts.sum())
    lo = min(v for v in summaries.column("min").to_pylist() if v is not None)
    hi = max(v for v in summaries.column("max").to_pylist() if v is not None)
    rank = split.quantile_rank(total, test_fraction)
    edges = split.bin_edges(lo, hi, bins)
    hist = np.sum([split.timestamp_histogram(b, edges).column("counts").to_pylist()[0] for b in batches], axis=0)
    assert hist.sum() == total
    index, before = split.locate_rank(hist, rank)
    inside = np.concatenate(
        [split.values_in_range(b, int(edges[index]), int(edges[index + 1])).column("ts").to_numpy() for b in batches]
    )
    return int(np.sort(inside)[rank - before]), rank


@pytest.mark.parametrize("bins", [1, 3, 16, split.HISTOGRAM_BINS])
@pytest.mark.parametrize("test_fraction", [0.1, 0.25, 0.5, 0.97])
def test_histogram_quantile_equals_full_sort(bins, test_fraction):
    rng = np.random.default_rng(7)
    # Clustered times with repeats, around a realistic epoch.
    values = np.concatenate([
        T0_US + rng.integers(0, 10**9, 200),
        T0_US + 5 * 10**8 + rng.integers(0, 50, 100),
        np.full(20, T0_US + 123_456),
    ])
    rng.shuffle(values)
    batches = [micros_table(values[:90]), micros_table([]), micros_table(values[90:91]),
               micros_table(values[91:250]), micros_table(values[250:])]
    cutoff, rank = exact_quantile(batches, test_fraction, bins)
    assert rank == split.quantile_rank(len(values), test_fraction)
    assert cutoff == int(np.sort(values)[rank])


def test_histogram_quantile_when_all_times_equal():
    batches = [micros_table([T0_US] * 4), micros_table([T0_US] * 3)]
    assert exact_quantile(batches, 0.1, split.HISTOGRAM_BINS) == (T0_US, 6)


def test_assign_split_time():
    table = events([("u", "a", "view", 0), ("u", "b", "click", 9), ("v", "c", "view", 10), ("v", "d", "like", 11)])
    result = split.assign_split(table, us(10))
    assert result.column_names == table.column_names + ["split"]
    assert result.column("split").type == pa.string()
    assert result.column("split").to_pylist() == ["train", "train", "test", "test"]
    assert result.select(table.column_names).equals(table)


def test_assign_split_cutoff_before_and_after_everything():
    table = events([("u", "a", "view", 0), ("u", "b", "click", 5)])
    assert split.assign_split(table, us(0)).column("split").to_pylist() == ["test", "test"]
    assert split.assign_split(table, us(5) + 1).column("split").to_pylist() == ["train", "train"]


def by_event(table, columns):
    return {(r["user_id"], r["item_id"]): tuple(r[c] for c in columns) for r in table.to_pylist()}


def test_per_user_cutoffs_latest_positive():
    table = events([
        ("a", "a1", "click", 1),
        ("a", "a2", "view", 2),
        ("a", "a3", "purchase", 3),   # latest positive of a
        ("a", "a4", "like", 2),
        ("a", "a5", "view", 4),       # after the cutoff: test
        ("b", "b1", "click", 5),      # only one positive: all train
        ("b", "b2", "view", 9),
        ("c", "c1", "view", 1),       # no positive
        ("d", "d1", "like", 6),       # two positives at the same time
        ("d", "d2", "add_to_cart", 6),
        ("d", "d3", "view", 3),
    ])
    with_cutoffs = split.per_user_cutoffs(table, POSITIVE)
    assert with_cutoffs.num_rows == table.num_rows
    assert with_cutoffs.column("_user_cutoff").type == pa.int64()
    never = np.iinfo(np.int64).max
    cutoffs = by_event(with_cutoffs, ["_user_cutoff"])
    assert {u: cutoffs[(u, i)][0] for u, i in cutoffs} == {"a": us(3), "b": never, "c": never, "d": us(6)}

    result = split.assign_split(with_cutoffs, None, strategy="leave_last_out")
    splits = {key: value[0] for key, value in by_event(result, ["split"]).items()}
    assert splits == {
        ("a", "a1"): "train", ("a", "a2"): "train", ("a", "a3"): "test", ("a", "a4"): "train",
        ("a", "a5"): "test",
        ("b", "b1"): "train", ("b", "b2"): "train",
        ("c", "c1"): "train",
        ("d", "d1"): "test", ("d", "d2"): "test", ("d", "d3"): "train",
    }


def test_per_user_cutoffs_respects_positive_types():
    table = events([("a", "x", "view", 1), ("a", "y", "view", 2), ("a", "z", "click", 3)])
    never = np.iinfo(np.int64).max
    only_click = split.per_user_cutoffs(table, ("click",)).column("_user_cutoff").to_pylist()
    assert only_click == [never] * 3
    with_views = split.per_user_cutoffs(table, ("view", "click"))
    assert set(with_views.column("_user_cutoff").to_pylist()) == {us(3)}
