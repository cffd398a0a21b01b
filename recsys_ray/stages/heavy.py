"""Heavy items: an item with so many events that one task would hold them all (the Zipf
head, a bot) is cut into time slices, each routed to its item partition on its own, and
each slice's features start from the exact state of the slices before it.

- Detection: every batch of whole users reports the items it holds at least
  `min_events` times (`candidate_counts`); a candidate's events per time bin
  (`time_histograms`, bins shared by every batch) give its exact total, and
  `plan_slices` cuts each item with more than `max_events` events into slices
  of at most `max_events` events (or one bin with more). A slice is a time
  range, so events at one time are never split, and each holds events of its
  item. Any such choice of slices gives the same output: only the size of the
  tasks depends on it.
- Carry: `slice_summaries` counts each slice's events (per batch, summed over
  batches), `carry_table` gives each slice the sum of the slices before it as
  an `asof.CARRY` row, its rating sum exact (`asof.exact_parts`).
- Windows: an item's events in [t − N days, t) are C(t) − C(t − N days), C(x)
  being its events before x. When t − N days lies in an earlier slice, the
  query's own slice reports C(t) and `window_queries` sends a query at
  t − N days to that slice, which reports −C(t − N days) for the same row;
  the shard writer adds the two (`training_rows.combine_item_parts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_ray import schemas
from recsys_ray.stages import asof
from recsys_ray.stages.features import MICROS_PER_DAY
from recsys_ray.stages.split import timestamp_micros

CANDIDATES = pa.schema([pa.field("item_id", pa.string()), pa.field("events", pa.int64())])
HISTOGRAMS = pa.schema([pa.field("item_id", pa.string()), pa.field("bin", pa.int64()),
                        pa.field("events", pa.int64())])
SUMMARIES = pa.schema([pa.field("item_id", pa.string()), pa.field("slice", pa.int32()),
                       *[pa.field(name, pa.int64()) for name in asof.CARRY_COUNTS],
                       pa.field("rating_parts", pa.list_(pa.float64()))])
SLICE_CARRY = pa.schema([*asof.CARRY, pa.field("slice", pa.int32())])


@dataclass(frozen=True)
class HeavyItems:
    """The heavy items (sorted) and where each one's slices after the first start (µs, ascending)."""

    item_ids: tuple[str, ...] = ()
    starts: tuple[tuple[int, ...], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.item_ids)

    def slices(self, item_ids: pa.Array | pa.ChunkedArray, ts: np.ndarray) -> np.ndarray:
        """The slice of each (item, time): 0 for an item that is not heavy."""
        out = np.zeros(len(ts), dtype=np.int32)
        if not self.item_ids or len(ts) == 0:
            return out
        which = pc.fill_null(pc.index_in(item_ids, value_set=pa.array(self.item_ids, pa.string())), -1)
        which = which.to_numpy(zero_copy_only=False)
        for position, starts in enumerate(self.starts):
            rows = np.flatnonzero(which == position)
            if len(rows):
                out[rows] = np.searchsorted(np.asarray(starts, dtype=np.int64), ts[rows], side="right")
        return out

    def slice_start(self, item_id: str, slice_index: int) -> int:
        """Where a slice's events start (the earliest int64 for the first slice)."""
        if slice_index == 0:
            return int(np.iinfo(np.int64).min)
        return self.starts[self.item_ids.index(item_id)][slice_index - 1]

    @property
    def slice_count(self) -> int:
        return sum(len(s) + 1 for s in self.starts)


NO_HEAVY_ITEMS = HeavyItems()


def candidate_counts(events: pa.Table, min_events: int) -> pa.Table:
    """Items with at least `min_events` events in this batch, and their counts here."""
    if events.num_rows == 0:
        return CANDIDATES.empty_table()
    counts = events.select(["item_id"]).group_by("item_id", use_threads=False).aggregate([("item_id", "count")])
    counts = counts.filter(pc.greater_equal(counts.column("item_id_count"), min_events))
    return pa.Table.from_arrays([counts.column("item_id"), counts.column("item_id_count")],
                                schema=CANDIDATES)


def time_histograms(events: pa.Table, candidates: tuple[str, ...], edges: np.ndarray) -> pa.Table:
    """Events of each candidate item per bin of `edges` in this batch (bins with events only)."""
    if events.num_rows == 0 or not candidates:
        return HISTOGRAMS.empty_table()
    mine = events.filter(pc.is_in(events.column("item_id"), value_set=pa.array(candidates, pa.string())))
    if mine.num_rows == 0:
        return HISTOGRAMS.empty_table()
    bins = np.searchsorted(edges, timestamp_micros(mine), side="right") - 1
    table = pa.table({"item_id": mine.column("item_id"), "bin": pa.array(bins.astype(np.int64))})
    counts = table.group_by(["item_id", "bin"], use_threads=False).aggregate([("bin", "count")])
    return pa.Table.from_arrays([counts.column("item_id"), counts.column("bin"), counts.column("bin_count")],
                                schema=HISTOGRAMS)


def plan_slices(histograms: pa.Table, edges: np.ndarray, max_events: int) -> HeavyItems:
    """Cut each item with more than `max_events` events (summed `time_histograms`) into
    slices: bins in time order, a new slice whenever the next bin would take the current
    one past `max_events`."""
    if histograms.num_rows == 0:
        return NO_HEAVY_ITEMS
    summed = histograms.group_by(["item_id", "bin"], use_threads=False).aggregate([("events", "sum")])
    summed = summed.sort_by([("item_id", "ascending"), ("bin", "ascending")])
    item_ids, starts = [], []
    ids = summed.column("item_id").to_pylist()
    bins = summed.column("bin").to_numpy()
    counts = summed.column("events_sum").to_numpy()
    begin = 0
    while begin < len(ids):
        end = begin
        while end < len(ids) and ids[end] == ids[begin]:
            end += 1
        if counts[begin:end].sum() > max_events:
            cuts, size = [], 0
            for b, c in zip(bins[begin:end], counts[begin:end]):
                if size and size + c > max_events:
                    cuts.append(int(edges[b]))
                    size = 0
                size += int(c)
            if cuts:
                item_ids.append(ids[begin])
                starts.append(tuple(cuts))
        begin = end
    return HeavyItems(tuple(item_ids), tuple(starts))


def slice_summaries(events: pa.Table, heavy: HeavyItems) -> pa.Table:
    """Per (heavy item, slice) in a batch of whole users: `asof.CARRY_COUNTS` and the exact
    rating sum of its events here (distinct users counted by `asof.pair_firsts`)."""
    if events.num_rows == 0 or not heavy:
        return SUMMARIES.empty_table()
    firsts = asof.pair_firsts(events)
    keep = pc.is_in(events.column("item_id"), value_set=pa.array(heavy.item_ids, pa.string()))
    mine = events.filter(keep)
    if mine.num_rows == 0:
        return SUMMARIES.empty_table()
    firsts = firsts[keep.to_numpy(zero_copy_only=False)]
    slices = heavy.slices(mine.column("item_id"), timestamp_micros(mine))
    types = pc.fill_null(pc.index_in(mine.column("interaction_type"),
                                     value_set=pa.array(schemas.INTERACTION_TYPES)), -1).to_numpy(
        zero_copy_only=False)
    rated = pc.is_valid(mine.column("rating")).to_numpy(zero_copy_only=False)
    ratings = pc.fill_null(mine.column("rating"), 0.0).to_numpy(zero_copy_only=False).astype(np.float64)
    keys = pa.table({"item_id": mine.column("item_id"), "slice": pa.array(slices)})
    order = pc.sort_indices(keys, sort_keys=[("item_id", "ascending"), ("slice", "ascending")]).to_numpy()
    keys = keys.take(pa.array(order))
    ids = keys.column("item_id").combine_chunks()
    sorted_slices = slices[order]
    new = np.ones(len(order), dtype=bool)
    if len(order) > 1:
        new[1:] = (pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(zero_copy_only=False)
                   | (sorted_slices[1:] != sorted_slices[:-1]))
    lo = np.flatnonzero(new).astype(np.int64)
    hi = np.append(lo[1:], len(order)).astype(np.int64)
    groups = keys.take(pa.array(lo))
    totals = asof.exact_totals(ratings[order], lo, hi)

    def per_group(flags: np.ndarray) -> pa.Array:
        cumulative = np.concatenate([[0], np.cumsum(flags[order].astype(np.int64))])
        return pa.array(cumulative[hi] - cumulative[lo])

    columns = {"total": pa.array(hi - lo), "unique_users": per_group(firsts),
               **{name: per_group(types == i) for i, name in enumerate(schemas.INTERACTION_TYPES)},
               "rating_count": per_group(rated)}
    return pa.table({"item_id": groups.column("item_id"), "slice": groups.column("slice"), **columns,
                     "rating_parts": pa.array([asof.exact_parts(t) for t in totals],
                                              pa.list_(pa.float64()))}).select(SUMMARIES.names).cast(SUMMARIES)


def carry_table(summaries: pa.Table, heavy: HeavyItems) -> pa.Table:
    """Per (heavy item, slice): the summed `slice_summaries` of its earlier slices as an
    `asof.CARRY` row with `slice` and `slice_start` (every slice listed, the first with zeros)."""
    totals: dict[tuple[str, int], tuple[np.ndarray, Fraction]] = {}
    names = list(asof.CARRY_COUNTS)
    for row in summaries.to_pylist():
        key = (row["item_id"], row["slice"])
        counts, rating = totals.get(key, (np.zeros(len(names), dtype=np.int64), Fraction(0)))
        totals[key] = (counts + np.array([row[n] for n in names], dtype=np.int64),
                       rating + sum((Fraction(p) for p in row["rating_parts"]), Fraction(0)))
    out: dict[str, list] = {name: [] for name in SLICE_CARRY.names}
    for item_id, starts in zip(heavy.item_ids, heavy.starts):
        counts, rating = np.zeros(len(names), dtype=np.int64), Fraction(0)
        for slice_index in range(len(starts) + 1):
            out["item_id"].append(item_id)
            out["slice"].append(slice_index)
            out["slice_start"].append(heavy.slice_start(item_id, slice_index))
            for name, value in zip(names, counts):
                out[name].append(int(value))
            out["rating_parts"].append(asof.exact_parts(rating))
            own_counts, own_rating = totals.get((item_id, slice_index), (0, Fraction(0)))
            counts, rating = counts + own_counts, rating + own_rating
    return pa.table(out, schema=SLICE_CARRY)


def window_queries(queries: pa.Table, heavy: HeavyItems, windows: tuple[int, ...]) -> pa.Table:
    """For query rows (item_id, timestamp, ..., `_slice`) of heavy items: one row per window
    N whose start t − N days lies in an earlier slice, routed there (`_slice`) with
    `_window` = N; the rows keep their own timestamp t."""
    if not heavy or not windows or queries.num_rows == 0:
        return queries.slice(0, 0).append_column("_window", pa.array([], pa.int32()))
    ts = timestamp_micros(queries)
    own = queries.column("_slice").to_numpy(zero_copy_only=False)
    parts = []
    for days in windows:
        earlier = heavy.slices(queries.column("item_id"), ts - int(days) * MICROS_PER_DAY)
        moved = np.flatnonzero(earlier != own)
        if len(moved):
            part = queries.take(pa.array(moved)).set_column(
                queries.schema.get_field_index("_slice"), "_slice", pa.array(earlier[moved], pa.int32()))
            parts.append(part.append_column("_window", pa.array(np.full(len(moved), days, np.int32))))
    if not parts:
        return queries.slice(0, 0).append_column("_window", pa.array([], pa.int32()))
    return pa.concat_tables(parts)
