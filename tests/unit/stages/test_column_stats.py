"""Column statistics merged across shards equal those of the whole column."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from recsys_ray.stages import column_stats


def test_partials_merged_in_any_split_equal_the_whole_column():
    rng = np.random.default_rng(3)
    values = rng.normal(50, 7, 1000)
    column = pa.array(values, mask=rng.random(1000) < 0.1)
    table = pa.table({"x": column, "n": pa.array(rng.integers(0, 9, 1000))})
    whole = column_stats.finalize(column_stats.column_partials(table, ["x"])["x"])
    kept = values[~np.asarray(column.is_null())]
    assert whole["count"] == len(kept) and whole["null_count"] == 1000 - len(kept)
    assert whole["mean"] == pytest.approx(kept.mean(), rel=1e-12)
    assert whole["std"] == pytest.approx(kept.std(), rel=1e-12)
    assert (whole["min"], whole["max"]) == (kept.min(), kept.max())
    cuts = [0, 1, 7, 400, 999, 1000]
    parts = [column_stats.column_partials(table.slice(a, b - a), ["x", "n"]) for a, b in zip(cuts, cuts[1:])]
    merged = column_stats.combine_partials(parts)
    for key, value in column_stats.finalize(merged["x"]).items():
        assert value == pytest.approx(whole[key], rel=1e-12)
    assert column_stats.finalize(merged["n"])["max"] <= 8


def test_a_column_without_values():
    table = pa.table({"x": pa.nulls(4, pa.float64())})
    stats = column_stats.finalize(column_stats.column_partials(table, ["x"])["x"])
    assert stats == {"count": 0, "null_count": 4, "mean": None, "std": None, "min": None, "max": None}
    empty = column_stats.finalize(column_stats.combine_partials([]).get("x", {"count": 0, "nulls": 0, "mean": 0.0,
                                                                               "m2": 0.0, "min": math.inf,
                                                                               "max": -math.inf}))
    assert empty["count"] == 0
