"""Report summaries against values computed by hand (docs/report.md has the definitions)."""

from __future__ import annotations

import math
from datetime import date, datetime, timezone

import numpy as np
import pyarrow as pa
import pytest

from recsys_ray.report import summaries as s


def frequencies_of(counts: list[int]) -> s.Distribution:
    return s.Distribution.from_frequencies(s.count_frequencies(pa.array(counts, pa.int64())))


def brute_gini(x: list[int]) -> float:
    x = np.asarray(x, dtype=float)
    return np.abs(x[:, None] - x[None, :]).sum() / (2 * len(x) ** 2 * x.mean())


def test_daily_counts_by_utc_day_and_type_and_combined_across_partitions():
    ts = [datetime(2026, 1, 1, 23, 59, 59, tzinfo=timezone.utc), datetime(2026, 1, 2, 0, 0, tzinfo=timezone.utc),
          datetime(2026, 1, 2, 12, 0, tzinfo=timezone.utc), datetime(1969, 12, 31, 23, 0, tzinfo=timezone.utc)]
    events = pa.table({"interaction_type": ["view", "view", "click", "view"],
                       "timestamp": pa.array(ts, pa.timestamp("us", tz="UTC"))})
    part = s.daily_counts(events)
    assert part.to_pylist() == [
        {"day": date(1969, 12, 31), "interaction_type": "view", "count": 1},
        {"day": date(2026, 1, 1), "interaction_type": "view", "count": 1},
        {"day": date(2026, 1, 2), "interaction_type": "click", "count": 1},
        {"day": date(2026, 1, 2), "interaction_type": "view", "count": 1},
    ]
    combined = s.combine_daily_counts([part, s.daily_counts(events.slice(1, 2)), s.daily_counts(events.slice(0, 0))])
    assert [r["count"] for r in combined.to_pylist()] == [1, 1, 2, 2]


def test_frequencies_combine_disjoint_keys():
    a = s.count_frequencies(pa.array([1, 1, 3, None]))
    b = s.count_frequencies(pa.array([3, 5]))
    assert s.combine_count_frequencies([a, b]).to_pylist() == [
        {"value": 1, "keys": 2}, {"value": 3, "keys": 2}, {"value": 5, "keys": 1}]


def test_top_shares_by_hand():
    # 200 items: one with 100, one with 50, 198 with 1 -> total 348
    d = frequencies_of([100, 50] + [1] * 198)
    assert d.count == 200 and d.total == 348
    # top 1 % = ceil(2) = 2 items -> 150 / 348; top 10 % = 20 items -> 100 + 50 + 18
    assert s.top_share(d, 1) == pytest.approx(150 / 348)
    assert s.top_share(d, 10) == pytest.approx(168 / 348)
    # fewer than 100 items: the top 1 % is still one item
    assert s.top_share(frequencies_of([5, 3, 2]), 1) == pytest.approx(5 / 10)


def test_gini_by_hand_and_against_the_pairwise_definition():
    assert s.gini(frequencies_of([4, 4, 4])) == 0.0
    # x = 1, 2, 3: sum |xi - xj| = 8, 2 n^2 mean = 2 * 9 * 2 = 36
    assert s.gini(frequencies_of([1, 2, 3])) == pytest.approx(8 / 36)
    # one key holds everything among n: (n - 1) / n
    assert s.gini(frequencies_of([0, 0, 0, 10])) == pytest.approx(3 / 4)
    rng = np.random.default_rng(1)
    x = list(rng.zipf(1.6, 500).clip(max=10_000))
    assert s.gini(frequencies_of(x)) == pytest.approx(brute_gini(x), rel=1e-12)


def test_long_tail_curve_is_the_cumulative_share_by_rank():
    tail = s.long_tail(frequencies_of([6, 3, 1]))
    assert list(tail.curve_ranks) == [1, 2, 3]
    assert list(tail.curve_shares) == pytest.approx([0.6, 0.9, 1.0])
    assert tail.gini == pytest.approx(brute_gini([6, 3, 1]))


def test_distribution_quantile_uses_the_lower_rank():
    d = frequencies_of([1, 2, 2, 9])
    assert d.quantile(0.5) == 2  # rank floor(0.5 * 3) = 1
    assert d.quantile(1.0) == 9 and d.quantile(0.0) == 1


def test_power_of_two_histogram_bins():
    h = s.power_of_two_histogram(frequencies_of([1, 1, 2, 3, 4, 5, 8, 9]))
    assert list(h.highs) == [1, 2, 4, 8, 16]
    assert list(h.counts) == [2, 1, 2, 2, 1]


def test_quantile_edges_and_bins_with_ties_and_nulls():
    ref = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, np.nan], dtype=float)
    # n = 10 non-null, ranks floor(k * 9 / 10) = 0, 1, 2, 3, 4, 5, 6, 7, 8
    assert list(s.quantile_edges(ref)) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    ties = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 5], dtype=float)
    edges = s.quantile_edges(ties)
    assert list(edges) == [0, 1]
    # bins (-inf, 0], (0, 1], (1, inf), null
    assert list(s.bin_counts(np.array([-1, 0, 0.5, 1, 7, np.nan]), edges)) == [2, 2, 1, 1]
    assert len(s.quantile_edges(np.array([np.nan]))) == 0


def test_psi_by_hand_with_epsilon_for_empty_bins():
    assert s.psi(np.array([50, 50]), np.array([50, 50])) == 0.0
    # p = (0.5, 0.5), q = (0.25, 0.75)
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert s.psi(np.array([2, 2]), np.array([1, 3])) == pytest.approx(expected)
    # an empty compared bin is floored at 1e-4
    expected = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + (1 - 0.5) * math.log(1 / 0.5)
    assert s.psi(np.array([1, 1]), np.array([0, 4])) == pytest.approx(expected)
    assert s.psi(np.array([0, 0]), np.array([1, 1])) == 0.0


def test_feature_shift_counts_nulls_in_their_own_bin():
    ref = s.feature_values(pa.array([1, 2, 3, 4, None]))
    cmp = s.feature_values(pa.array([None, None, 4, 4]))
    shift = s.feature_shift("f", ref, cmp, bins=2)
    # n = 4, cut at rank floor(1 * 3 / 2) = 1 -> value 2: bins (-inf, 2], (2, inf), null
    assert list(shift.edges) == [2]
    assert list(shift.reference_counts) == [2, 2, 1] and list(shift.compared_counts) == [0, 2, 2]
    p, q = np.array([0.4, 0.4, 0.2]), np.array([1e-4, 0.5, 0.5])
    assert shift.psi == pytest.approx(float(np.sum((q - p) * np.log(q / p))))


def test_popularity_shift_bins_by_reference_rank():
    ref = pa.table({"item_id": ["a", "b", "c", "d"], "count": [10, 5, 5, 1]})
    cur = pa.table({"item_id": ["a", "c", "b", "e"], "count": [1, 5, 5, 10]})
    shift = s.popularity_shift(ref, cur, bins=2)
    # ranks a, b (tie with c, broken by id), c, d -> bins 0, 0, 1, 1; e is new
    assert list(shift.reference_counts) == [15, 6, 0]
    assert list(shift.compared_counts) == [6, 5, 10]
    assert shift.psi == pytest.approx(s.psi(np.array([15, 6, 0]), np.array([6, 5, 10])))


def test_cold_start_shares_from_test_positives():
    shard_a = pa.table({"user_id": ["u1", "u1", "u2", "u3"], "item_id": ["i1", "i9", "i2", "i1"],
                        "label": pa.array([1, 0, 1, 1], pa.float32())})
    shard_b = pa.table({"user_id": ["u3", "u4"], "item_id": ["i3", "i1"], "label": pa.array([1, 1], pa.float32())})
    keys = s.combine_test_keys([s.test_positive_keys(shard_a), s.test_positive_keys(shard_b)])
    cold = s.cold_start(keys, train_users=pa.array(["u1", "u2", "u9"]), train_items=pa.array(["i1", "i2"]))
    # test users u1..u4 (u3, u4 cold); test items i1, i2, i3 (i3 cold; i9 is a negative)
    assert (cold.test_users, cold.cold_users, cold.test_items, cold.cold_items) == (4, 2, 3, 1)
    # 5 test positives: u3 holds 2, u4 1; one positive on i3
    assert (cold.test_positives, cold.positives_on_cold_users, cold.positives_on_cold_items) == (5, 3, 1)


def test_quarantine_samples_are_the_first_rows_per_reason_whatever_the_partitioning():
    rows = pa.table({"dataset": ["interactions"] * 5, "source": ["f2", "f1", "f1", "f1", "f1"],
                     "row": [0, 9, 3, 4, 1], "reason": ["bad", "bad", "bad", "missing", "bad"],
                     "field": ["x"] * 5, "message": ["m"] * 5, "original": ["{}"] * 5})
    whole = s.quarantine_samples(rows, 2)
    parts = s.combine_quarantine_samples([s.quarantine_samples(rows.slice(0, 2), 2),
                                          s.quarantine_samples(rows.slice(2), 2)], 2)
    assert whole.to_pylist() == parts.to_pylist()
    assert [(r["reason"], r["source"], r["row"]) for r in whole.to_pylist()] == [
        ("bad", "f1", 1), ("bad", "f1", 3), ("missing", "f1", 4)]


def test_count_change_thresholds():
    assert s.CountChange("x", 130, 100).exceeds(0.2)
    assert not s.CountChange("x", 110, 100).exceeds(0.2)
    assert s.CountChange("x", 5, 0).exceeds(0.2) and not s.CountChange("x", 0, 0).exceeds(0.2)
    assert s.CountChange("x", 5, 0).relative is None


def test_item_turnover():
    t = s.item_turnover(pa.array(["a", "b", "d", "c"]), pa.array(["a", "x", "b"]), examples=1)
    assert (t.current_items, t.previous_items, t.new_items, t.vanished_items) == (4, 3, 2, 1)
    assert t.new_examples == ("c",) and t.vanished_examples == ("x",)
