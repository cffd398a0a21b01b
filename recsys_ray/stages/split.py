"""Splitting events by time, with an exact global quantile computed from small summaries.

The cutoff is the event-time quantile at 1 - test_fraction over the valid,
de-duplicated events. It is computed exactly without collecting the timestamps:
per-block (count, min, max) summaries, then per-block histograms, then only the
values inside the one histogram bin that holds the quantile.
"""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HISTOGRAM_BINS = 1 << 16


def timestamp_micros(events: pa.Table) -> np.ndarray:
    column = events.column("timestamp")
    return pc.cast(pc.cast(column, pa.timestamp("us")), pa.int64()).to_numpy(zero_copy_only=False)


def time_summary(events: pa.Table) -> pa.Table:
    """One row: count, min and max event time (microseconds) of this batch."""
    ts = timestamp_micros(events)
    if len(ts) == 0:
        return pa.table({"count": [0], "min": pa.array([None], pa.int64()), "max": pa.array([None], pa.int64())})
    return pa.table({"count": [len(ts)], "min": [int(ts.min())], "max": [int(ts.max())]})


def bin_edges(lo: int, hi: int, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Integer bin edges covering [lo, hi] (the last edge is exclusive)."""
    return np.unique(np.linspace(lo, hi + 1, bins + 1).astype(np.int64))


def timestamp_histogram(events: pa.Table, edges: np.ndarray) -> pa.Table:
    """Counts of this batch's event times per bin of `edges`, as one row."""
    ts = timestamp_micros(events)
    counts = np.bincount(np.searchsorted(edges, ts, side="right") - 1, minlength=len(edges) - 1)
    return pa.table({"counts": [counts[: len(edges) - 1].astype(np.int64)]})


def values_in_range(events: pa.Table, lo: int, hi: int) -> pa.Table:
    """Event times in [lo, hi), for the final exact step of the quantile."""
    ts = timestamp_micros(events)
    return pa.table({"ts": ts[(ts >= lo) & (ts < hi)]})


def quantile_rank(total: int, test_fraction: float) -> int:
    """0-based rank of the cutoff: rows below it form the training window.

    The fraction is taken as the decimal it is written as (0.3, not the binary
    0.29999...), so (1 - f) * n is exact and never a row short.
    """
    train = (1 - Decimal(repr(float(test_fraction)))) * total
    return min(total - 1, max(0, int(train.to_integral_value(rounding=ROUND_FLOOR))))


def locate_rank(counts: np.ndarray, rank: int) -> tuple[int, int]:
    """The bin holding the `rank`-th value and how many values lie in earlier bins."""
    cumulative = np.cumsum(counts)
    index = int(np.searchsorted(cumulative, rank, side="right"))
    before = int(cumulative[index - 1]) if index > 0 else 0
    return index, before


def assign_split(events: pa.Table, cutoff_us: int | None, strategy: str = "time") -> pa.Table:
    """Add a `split` column: "train" before the cutoff, "test" at or after it.

    With strategy "leave_last_out" each user's own cutoff is the time of their
    latest positive event (see `per_user_cutoffs`); `events` must then hold
    whole users and a `_user_cutoff` column.
    """
    ts = timestamp_micros(events)
    if strategy == "time":
        is_test = ts >= cutoff_us
    else:
        user_cutoff = events.column("_user_cutoff").to_numpy(zero_copy_only=False)
        is_test = ts >= user_cutoff
    split = pc.if_else(pa.array(is_test, pa.bool_()), pa.scalar("test"), pa.scalar("train"))
    return events.append_column("split", split)


def per_user_cutoffs(events: pa.Table, positive_types: tuple[str, ...]) -> pa.Table:
    """Leave-last-out: each user's latest positive event time becomes their cutoff.

    Users with fewer than two positive events keep all their events for training.
    """
    positive = pc.is_in(events.column("interaction_type"), value_set=pa.array(positive_types))
    ts = timestamp_micros(events)
    table = pa.table({"user_id": events.column("user_id"), "ts": ts,
                      "pos_ts": np.where(positive.to_numpy(zero_copy_only=False), ts, np.iinfo(np.int64).min),
                      "pos": positive.cast(pa.int64())})
    stats = table.group_by("user_id", use_threads=False).aggregate([("pos_ts", "max"), ("pos", "sum")])
    never = np.iinfo(np.int64).max
    cutoff = np.where(stats.column("pos_sum").to_numpy() >= 2, stats.column("pos_ts_max").to_numpy(), never)
    per_user = pa.table({"user_id": stats.column("user_id"), "_user_cutoff": cutoff})
    return events.join(per_user, "user_id", join_type="left outer", use_threads=False)


def split_events(events: pa.Table, cutoff_us: int, strategy: str, positive_types: tuple[str, ...]) -> pa.Table:
    """Events of whole users with their `split`, under either strategy."""
    if strategy == "leave_last_out":
        events = per_user_cutoffs(events, positive_types)
    return assign_split(events, cutoff_us, strategy)


def train_events(events: pa.Table, cutoff_us: int, strategy: str, positive_types: tuple[str, ...]) -> pa.Table:
    """The training-window events of whole users (what features may see)."""
    with_split = split_events(events, cutoff_us, strategy, positive_types)
    return with_split.filter(pc.equal(with_split.column("split"), "train"))

