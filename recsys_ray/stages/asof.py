"""Point-in-time ("as of") features: each row's values from events strictly before its own time.

A query is a row's key (user or item) and time t. Events are sorted once by
(key, time); a query's features are differences of cumulative sums between
the start of its key's block and its position, the number of the key's events
with timestamp < t, found by binary search on a composite key (key code, dense
time rank). Events at exactly t never count. Many rows share (key, t), e.g. a
positive and its negatives, so each distinct (key, t) is computed once.

Sums of ratings are exact (an integer sum of the ratings' binary digits,
rounded once, as `math.fsum`), so a value depends only on the events it
covers, never on what else shares the batch or on event order.

See docs/features.md for every definition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys_ray import schemas
from recsys_ray.stages.features import MICROS_PER_DAY, catalog_attributes
from recsys_ray.stages.split import timestamp_micros
from recsys_ray.stages.vocab import VocabularyLookup, lookup_indices

HISTORY_FIELDS = schemas.HISTORY_COLUMNS
HISTORY_INDEX = "history_item_idx"
# A chunk of a history column holds at most this many list values and string
# bytes (rows are never split), far below what 32-bit offsets can address.
HISTORY_CHUNK_VALUES = 1 << 22
HISTORY_CHUNK_BYTES = 1 << 29
FIRST_SEEN = pa.schema([pa.field("user_id", pa.string()), pa.field("first_seen", schemas.TIMESTAMP)])
# Per event: the earliest of its (user, item) pair (`pair_firsts`): what counts an item's distinct users.
FIRST_USER_EVENT = "first_user_event"
CARRY_COUNTS = ("total", "unique_users", *schemas.INTERACTION_TYPES, "rating_count")
# The state an item's features carry from its events before `slice_start` (microseconds):
# event counts, distinct users, counts by type, rated events and the exact rating sum as
# floats that add up to it (`exact_parts`).
CARRY = pa.schema([pa.field("item_id", pa.string()), pa.field("slice_start", pa.int64()),
                   *[pa.field(name, pa.int64()) for name in CARRY_COUNTS],
                   pa.field("rating_parts", pa.list_(pa.float64()))])

_LIMB_BITS = 32
_LIMB_MASK = np.uint64((1 << _LIMB_BITS) - 1)


def window_columns(prefix: str, windows_days: Sequence[int]) -> list[str]:
    """`{prefix}_events_{N}d` for each window, after checking the windows are distinct positive days."""
    days = list(windows_days)
    if any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 for n in days):
        raise ValueError(f"windows must be positive whole days, got {days}")
    if len(set(days)) != len(days):
        raise ValueError(f"windows must be distinct, got {days}")
    return schemas.window_columns(prefix, days)


def user_as_of_schema(windows_days: Sequence[int] = (7, 30), history: int = 20) -> pa.Schema:
    """Columns of `user_features_as_of`."""
    _check_history(history)
    window_columns("user", windows_days)
    return schemas.user_row_features(windows_days, history)


def item_as_of_schema(windows_days: Sequence[int] = (7, 30)) -> pa.Schema:
    """Columns of `item_features_as_of`."""
    window_columns("item", windows_days)
    return schemas.item_row_features(windows_days)


def user_features_as_of(events: pa.Table, queries: pa.Table, *, windows_days: Sequence[int] = (7, 30),
                        history: int = 20, item_vocabulary: VocabularyLookup | None = None) -> pa.Table:
    """User features of each query row (user_id, timestamp t) from the user's events before t.

    `events` (user_id, item_id, interaction_type, timestamp, rating) must hold
    every event of every user in `queries`. Returns one row per query row, in
    query order, as `user_as_of_schema(windows_days, history)`; with
    `item_vocabulary` and a history, also `history_item_idx`: the vocabulary
    index of each item of `history_item_ids`, looked up once per distinct item
    of `events`.
    """
    schema = user_as_of_schema(windows_days, history)
    if item_vocabulary is not None and history:
        schema = schema.append(pa.field(HISTORY_INDEX, pa.list_(pa.int32())))
    if queries.num_rows == 0:
        return schema.empty_table()
    user_code, users = _codes(events, "user_id")
    item_code, items = _lexical_codes(events, "item_id")
    type_code, types = _lexical_codes(events, "interaction_type")
    timeline = _Timeline.build(user_code, len(users), _times(events),
                               tiebreak=item_code * max(len(types), 1) + type_code)
    points = _Points.build(_query_codes(queries, "user_id", users), _times(queries))
    start, end = timeline.block_start[points.code], timeline.position(points)

    new_user = np.ones(timeline.size, dtype=bool)
    new_user[1:] = timeline.code[1:] != timeline.code[:-1]
    day = timeline.ts // MICROS_PER_DAY
    new_day = new_user.copy()
    new_day[1:] |= day[1:] != day[:-1]
    counts = _counts(events, timeline, start, end)
    total = end - start
    none = total == 0
    last = timeline.ts[end - 1] if timeline.size else np.zeros(len(end), dtype=np.int64)
    by_point = {
        "user_total_interactions": total,
        "user_unique_items": _range_sum(timeline.first_of_pairs(item_code, len(items)), start, end),
        **{f"user_n_{k}": counts[k] for k in schemas.INTERACTION_TYPES},
        "user_avg_rating": _ratio(counts["rating_sum"], counts["rating_count"]),
        "user_purchase_rate": _ratio(counts["purchase"], total),
        "user_days_active": _range_sum(new_day, start, end),
        "user_last_ts": pa.array(last, pa.timestamp("us"), mask=none).cast(schemas.TIMESTAMP),
        "user_recency_days": _nullable((points.t - last) / MICROS_PER_DAY, none),
    }
    for name, days in zip(window_columns("user", windows_days), windows_days):
        by_point[name] = end - timeline.position(points, before_us=int(days) * MICROS_PER_DAY)
    table = pa.table(by_point).take(pa.array(points.of_row))
    if history:
        dictionaries: list[pa.Array | np.ndarray] = [items, types]
        codes = [item_code[timeline.order].astype(np.int32), type_code[timeline.order].astype(np.int32)]
        names = list(HISTORY_FIELDS)
        if item_vocabulary is not None:
            dictionaries.append(lookup_indices(items, item_vocabulary).to_numpy())
            codes.append(codes[0])
            names.append(HISTORY_INDEX)
        lists = _history_lists(tuple(dictionaries), tuple(codes), end, np.minimum(total, history), points.of_row,
                               history)
        for name, column in zip(names, lists):
            table = table.append_column(name, column)
    return table.select(schema.names).cast(schema)


def item_features_as_of(events: pa.Table, queries: pa.Table, *, windows_days: Sequence[int] = (7, 30),
                        catalog: pa.Table | None = None, carry: pa.Table | None = None) -> pa.Table:
    """Item features of each query row (item_id, timestamp t, users_before) from the item's events before t.

    `events` (item_id, interaction_type, timestamp, rating, and user_id or
    `FIRST_USER_EVENT`) must hold every event of every item in `queries`, or
    with `carry` every event from the item's `slice_start` on; `users_before`
    is the number of distinct users with any event before t (see
    `user_first_seen`). `carry` (`CARRY` rows, one per item at most) is the
    state of an item's events before its `slice_start`, which the features add
    exactly; a window reaching back before `slice_start` then holds every event
    before t, and the caller subtracts the events before t − N days (see
    `recsys_ray.stages.heavy`). Catalog attributes come from `catalog`
    (de-duplicated; None: all null). Returns one row per query row, in query
    order, as `item_as_of_schema(windows_days)`.
    """
    schema = item_as_of_schema(windows_days)
    if queries.num_rows == 0:
        return schema.empty_table()
    users_before = queries.column("users_before")
    if users_before.null_count:
        raise ValueError("users_before must not be null")
    users_before = users_before.to_numpy().astype(np.int64)
    item_code, items = _codes(events, "item_id")
    timeline = _Timeline.build(item_code, len(items), _times(events))
    query_item_code, query_items = _codes(queries, "item_id")
    points = _Points.build(_map_codes(query_items, items)[query_item_code], _times(queries))
    start, end = timeline.block_start[points.code], timeline.position(points)

    if carry is not None and carry.num_rows:
        queried = pc.is_in(query_items, value_set=carry.column(CARRY.names[0]).cast(pa.string()))
        empty = pc.and_(queried, pc.invert(pc.is_in(query_items, value_set=items)))
        if pc.any(empty).as_py():
            # Its carry would have no block to attach to: a slice must hold events of its item.
            raise ValueError("a carried item has queries but no events in this batch: "
                             f"{pc.filter(query_items, empty)[0].as_py()!r}")
    carried = _Carried.of(carry, items, points.code)
    counts = _counts(events, timeline, start, end, carried)
    for name in ("rating_count", *schemas.INTERACTION_TYPES):
        counts[name] = counts[name] + carried.column(name)
    total = end - start + carried.column("total")
    if FIRST_USER_EVENT in events.column_names:
        firsts = events.column(FIRST_USER_EVENT).to_numpy(zero_copy_only=False)[timeline.order]
    else:
        user_code, users = _codes(events, "user_id")
        firsts = timeline.first_of_pairs(user_code, len(users))
    unique_users = _range_sum(firsts, start, end) + carried.column("unique_users")
    by_point = {
        "item_total_interactions": total,
        "item_unique_users": unique_users,
        **{f"item_n_{k}": counts[k] for k in schemas.INTERACTION_TYPES},
        "item_avg_rating": _ratio(counts["rating_sum"], counts["rating_count"]),
        "item_ctr": _ratio(counts["click"], counts["view"]),
        "item_purchase_rate": _ratio(counts["purchase"], total),
    }
    for name, days in zip(window_columns("item", windows_days), windows_days):
        reaches_back = points.t - int(days) * MICROS_PER_DAY < carried.slice_start
        by_point[name] = (end - timeline.position(points, before_us=int(days) * MICROS_PER_DAY)
                          + np.where(reaches_back, carried.column("total"), 0))
    table = pa.table(by_point).take(pa.array(points.of_row))
    popularity = _ratio(unique_users[points.of_row], users_before)
    table = table.append_column("item_popularity", popularity)
    attributes = catalog_attributes(catalog, query_items).take(pa.array(query_item_code))
    for name in attributes.column_names:
        table = table.append_column(name, attributes.column(name))
    return table.select(schema.names).cast(schema)


def user_first_seen(events: pa.Table) -> pa.Table:
    """(user_id, first_seen): each user's earliest event time, for a batch holding whole users."""
    if events.num_rows == 0:
        return FIRST_SEEN.empty_table()
    first = events.select(["user_id", "timestamp"]).group_by("user_id", use_threads=False).aggregate(
        [("timestamp", "min")])
    return pa.Table.from_arrays([first.column("user_id"), first.column("timestamp_min")],
                                names=FIRST_SEEN.names).cast(FIRST_SEEN)


def count_before(sorted_times: np.ndarray, t: np.ndarray) -> np.ndarray:
    """How many of `sorted_times` (ascending) are strictly less than each of `t`."""
    return np.searchsorted(np.asarray(sorted_times), np.asarray(t), side="left").astype(np.int64)


def exact_range_sums(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """sum(values[lo[i]:hi[i]]) for each i, exactly rounded to float64 (what `math.fsum` returns).

    Each finite float is an integer times a power of two, so the values are
    summed as integers: in one float64 cumulative sum when every partial sum is
    an exactly representable multiple of a common power of two (ratings such as
    1..5 or half stars), else in 32-bit limbs with int64 cumulative sums, each
    range's total then rounded once (to nearest, ties to even).
    """
    values = np.asarray(values, dtype=np.float64)
    lo, hi = np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64)
    if not np.isfinite(values).all():
        raise ValueError("values to sum must be finite")
    if len(lo) == 0 or not values.any():
        return np.zeros(len(lo), dtype=np.float64)
    magnitude = float(np.abs(values).sum())
    for scale in (1.0, 2.0, 4.0, 8.0, 16.0):
        scaled = values * scale  # exact: a power of two
        if magnitude * scale < 2.0 ** 53 and (scaled == np.floor(scaled)).all():
            cumulative = np.zeros(len(values) + 1, dtype=np.float64)
            np.cumsum(values, out=cumulative[1:])
            return cumulative[hi] - cumulative[lo]
    return _limb_range_sums(values, lo, hi)


def exact_totals(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> list[Fraction]:
    """sum(values[lo[i]:hi[i]]) for each i as an exact `Fraction` (no rounding at all):
    what a later sum can add to without losing exactness (`exact_parts`)."""
    values = np.asarray(values, dtype=np.float64)
    lo, hi = np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64)
    if not np.isfinite(values).all():
        raise ValueError("values to sum must be finite")
    if len(lo) == 0 or not values.any():
        return [Fraction(0)] * len(lo)
    limbs, exponent = _limb_totals(values, lo, hi)
    scale = Fraction(2) ** exponent
    return [sum((int(limbs[k, i]) << (_LIMB_BITS * k) for k in range(limbs.shape[0])), 0) * scale
            for i in range(len(lo))]


def exact_parts(total: Fraction) -> list[float]:
    """Floats whose exact sum is `total` (a sum of floats), largest first: an exact value
    that travels as float64 and that `exact_range_sums` adds up exactly again."""
    parts, rest = [], Fraction(total)
    while rest:
        part = float(rest)
        parts.append(part)
        rest -= Fraction(part)
    return parts


def _limb_totals(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, int]:
    """Exact range sums as int64 limbs: sum_k limbs[k, i] * 2**(32 k + exponent)."""
    nonzero = values != 0
    fraction, exponent = np.frexp(values)
    mantissa = np.abs(fraction * 2.0 ** 53).astype(np.uint64)  # exact: |fraction| in [0.5, 1)
    ulp_exponent = exponent.astype(np.int64) - 53
    lowest = int(ulp_exponent[nonzero].min())
    shift = np.where(nonzero, ulp_exponent - lowest, 0)
    limb, offset = shift // _LIMB_BITS, (shift % _LIMB_BITS).astype(np.uint64)
    n_limbs = int(limb.max()) + 3
    low_shifted = (mantissa & _LIMB_MASK) << offset
    high_shifted = (mantissa >> np.uint64(_LIMB_BITS)) << offset
    sign = np.where(values < 0, -1, 1)
    parts = np.zeros((n_limbs, len(values)), dtype=np.int64)
    columns = np.arange(len(values))
    # |value| / 2**lowest = mantissa << shift: three limbs from `limb` up.
    parts[limb, columns] += (low_shifted & _LIMB_MASK).astype(np.int64) * sign
    parts[limb + 1, columns] += ((low_shifted >> np.uint64(_LIMB_BITS))
                                 + (high_shifted & _LIMB_MASK)).astype(np.int64) * sign
    parts[limb + 2, columns] += (high_shifted >> np.uint64(_LIMB_BITS)).astype(np.int64) * sign
    cumulative = np.zeros((n_limbs, len(values) + 1), dtype=np.int64)
    np.cumsum(parts, axis=1, out=cumulative[:, 1:])
    return cumulative[:, hi] - cumulative[:, lo], lowest


def _limb_range_sums(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return _round_limbs(*_limb_totals(values, lo, hi))


def _round_limbs(limbs: np.ndarray, exponent: int) -> np.ndarray:
    """Correctly rounded float64 of sum_k limbs[k] * 2**(32 k + exponent), per column."""
    n = limbs.shape[1]
    # Two zero limbs below give every nonzero total three limbs to round from;
    # two above take the carries.
    work = np.zeros((limbs.shape[0] + 4, n), dtype=np.int64)
    work[2:-2] = limbs
    exponent -= 2 * _LIMB_BITS
    _normalise(work)
    negative = work[-1] < 0
    if negative.any():
        flipped = -work[:, negative]
        _normalise(flipped)
        work[:, negative] = flipped
    digits = work.astype(np.uint64)
    top = np.full(n, -1, dtype=np.int64)     # highest nonzero limb
    bottom = np.full(n, -1, dtype=np.int64)  # lowest nonzero limb
    for k in range(digits.shape[0]):
        present = digits[k] != 0
        top[present] = k
        bottom[present & (bottom < 0)] = k
    zero = top < 0
    top[zero] = 2
    columns = np.arange(n)
    high, middle, low = digits[top, columns], digits[top - 1, columns], digits[top - 2, columns]
    bits = np.frexp(np.maximum(high, 1).astype(np.float64))[1].astype(np.uint64)  # bit length of `high`
    # The 64 bits from the total's leading one down; everything below is `sticky`.
    window = (high << (np.uint64(64) - bits)) | (middle << (np.uint64(32) - bits)) | (low >> bits)
    sticky = (bottom < top - 2) | ((low & ((np.uint64(1) << bits) - np.uint64(1))) != 0)
    kept, dropped = window >> np.uint64(11), window & np.uint64(0x7FF)
    half = np.uint64(0x400)
    round_up = (dropped > half) | ((dropped == half) & (sticky | ((kept & np.uint64(1)) == 1)))
    kept = kept + round_up.astype(np.uint64)
    magnitude = np.ldexp(kept.astype(np.float64), _LIMB_BITS * top + bits.astype(np.int64) - 53 + exponent)
    return np.where(zero, 0.0, np.where(negative, -magnitude, magnitude))


def _normalise(limbs: np.ndarray) -> None:
    """Carry in place so that every limb but the top one lies in [0, 2**32)."""
    for k in range(limbs.shape[0] - 1):
        carry = limbs[k] >> _LIMB_BITS
        limbs[k] -= carry << _LIMB_BITS
        limbs[k + 1] += carry


@dataclass(frozen=True)
class _Timeline:
    """Events sorted by (key code, time[, tiebreak]): each key's events form one block.

    `key` is code * (T + 1) + the dense rank of the time among the T distinct
    event times, so one binary search finds how many of a key's events lie
    before a time. Code n_codes is an empty block, for keys without events.
    """

    order: np.ndarray        # event row at each sorted position
    code: np.ndarray         # key code, sorted
    ts: np.ndarray           # event time (microseconds), sorted
    key: np.ndarray          # composite (code, time rank), sorted
    block_start: np.ndarray  # sorted position of each code's first event (n_codes + 2 entries)
    times: np.ndarray        # distinct event times, ascending

    @classmethod
    def build(cls, codes: np.ndarray, n_codes: int, ts: np.ndarray, tiebreak: np.ndarray | None = None) -> _Timeline:
        times, rank = np.unique(ts, return_inverse=True)
        key = codes.astype(np.int64) * (len(times) + 1) + rank.reshape(-1)
        order = np.argsort(key)
        if tiebreak is not None:
            order = _break_ties(order, key[order], tiebreak)
        block_start = np.zeros(n_codes + 2, dtype=np.int64)
        np.cumsum(np.bincount(codes, minlength=n_codes + 1), out=block_start[1:])
        return cls(order, codes[order], ts[order], key[order], block_start, times)

    @property
    def size(self) -> int:
        return len(self.order)

    def position(self, points: _Points, before_us: int = 0) -> np.ndarray:
        """Sorted position past the last event of each point's key with time < (point time - before_us)."""
        rank = np.searchsorted(self.times, points.times - before_us, side="left")[points.time_index]
        return np.searchsorted(self.key, points.code * (len(self.times) + 1) + rank, side="left")

    def first_of_pairs(self, other: np.ndarray, n_other: int) -> np.ndarray:
        """Per sorted position: is it the earliest event of its (key, other) pair?
        (Of pair events at one time any one is marked: they count together.)"""
        first = np.zeros(self.size, dtype=bool)
        if self.size:
            pair = self.code * n_other + other[self.order]
            by_pair = np.argsort(pair)
            grouped = pair[by_pair]
            starts = np.flatnonzero(np.concatenate([[True], grouped[1:] != grouped[:-1]]))
            first[np.minimum.reduceat(by_pair, starts)] = True
        return first


def _break_ties(order: np.ndarray, sorted_key: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """Reorder runs of equal key by `tiebreak` (only the tied positions are sorted again)."""
    equal = sorted_key[1:] == sorted_key[:-1]
    tied = np.zeros(len(order), dtype=bool)
    tied[1:] |= equal
    tied[:-1] |= equal
    at = np.flatnonzero(tied)
    if len(at):
        rows = order[at]
        order = order.copy()
        order[at] = rows[np.lexsort((tiebreak[rows], sorted_key[at]))]
    return order


@dataclass(frozen=True)
class _Points:
    """The distinct (key code, time) of the query rows, sorted by (code, time)."""

    code: np.ndarray        # per point
    time_index: np.ndarray  # per point, into `times`
    times: np.ndarray       # distinct query times, ascending
    of_row: np.ndarray      # per query row, its point

    @property
    def t(self) -> np.ndarray:
        return self.times[self.time_index]

    @classmethod
    def build(cls, code: np.ndarray, t: np.ndarray) -> _Points:
        time_rank, times = _dense_rank(t)
        point_rank, points = _dense_rank(code.astype(np.int64) * len(times) + time_rank)
        return cls(points // len(times), points % len(times), times, point_rank)


def _dense_rank(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each value's index among the distinct values, and the distinct values (ascending)."""
    order = np.argsort(values)
    ordered = values[order]
    new = np.ones(len(values), dtype=bool)
    new[1:] = ordered[1:] != ordered[:-1]
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = np.cumsum(new) - 1
    return rank, ordered[new]


def _counts(events: pa.Table, timeline: _Timeline, start: np.ndarray, end: np.ndarray,
            carried: _Carried | None = None) -> dict[str, np.ndarray]:
    """Per [start, end) range of sorted events: events of each type, rated events and their
    rating sum (with `carried`, the exact sum also holds each range's carried rating parts)."""
    type_index = pc.fill_null(pc.index_in(events.column("interaction_type"),
                                          value_set=pa.array(schemas.INTERACTION_TYPES)), -1)
    type_sorted = type_index.to_numpy(zero_copy_only=False)[timeline.order]
    rating = events.column("rating")
    rated = pc.is_valid(rating).to_numpy(zero_copy_only=False)[timeline.order]
    rating_values = pc.fill_null(rating, 0.0).to_numpy(zero_copy_only=False).astype(np.float64)[timeline.order]
    if carried is None or not carried.any_parts:
        rating_sum = exact_range_sums(rating_values, start, end)
    else:
        rating_sum = exact_range_sums(*carried.with_parts(rating_values, timeline, start, end))
    return {
        **{k: _range_sum(type_sorted == i, start, end) for i, k in enumerate(schemas.INTERACTION_TYPES)},
        "rating_count": _range_sum(rated, start, end),
        "rating_sum": rating_sum,
    }


@dataclass(frozen=True)
class _Carried:
    """The `CARRY` state of each point's key (zeros, and no slice start, for a key without one)."""

    by_point: dict[str, np.ndarray]
    slice_start: np.ndarray      # per point
    parts: list[list[float]]     # per key code (n_codes + 1 entries)
    point_code: np.ndarray

    @classmethod
    def of(cls, carry: pa.Table | None, keys: pa.Array, point_code: np.ndarray) -> _Carried:
        n = len(point_code)
        if carry is None or carry.num_rows == 0:
            zeros = np.zeros(n, dtype=np.int64)
            return cls({name: zeros for name in CARRY_COUNTS}, np.full(n, np.iinfo(np.int64).min), [], point_code)
        carry = carry.cast(CARRY)
        found = pc.fill_null(pc.index_in(keys, value_set=carry.column(CARRY.names[0])), -1)
        row_of_code = np.append(found.to_numpy(zero_copy_only=False), -1).astype(np.int64)  # + the empty code
        row = row_of_code[point_code]
        has = row >= 0
        safe = np.maximum(row, 0)

        def per_point(name: str, missing: int) -> np.ndarray:
            values = carry.column(name).to_numpy(zero_copy_only=False).astype(np.int64)
            return np.where(has, values[safe], missing) if len(values) else np.full(n, missing)

        parts_of_row = carry.column("rating_parts").to_pylist()
        parts = [list(parts_of_row[r] or []) if r >= 0 else [] for r in row_of_code]
        return cls({name: per_point(name, 0) for name in CARRY_COUNTS},
                   per_point("slice_start", np.iinfo(np.int64).min), parts, point_code)

    def column(self, name: str) -> np.ndarray:
        return self.by_point[name]

    @property
    def any_parts(self) -> bool:
        return any(self.parts)

    def with_parts(self, values: np.ndarray, timeline: _Timeline, start: np.ndarray,
                   end: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sorted values with each key's carried parts just before its block, and every
        range widened to its parts: (values, lo, hi) for `exact_range_sums`."""
        n_parts = np.array([len(p) for p in self.parts], dtype=np.int64)
        before = np.concatenate([[0], np.cumsum(n_parts)])  # parts ahead of each code's block
        codes = timeline.code
        out = np.zeros(len(values) + int(before[-1]), dtype=np.float64)
        out[np.arange(len(values)) + before[codes + 1]] = values
        for code, parts in enumerate(self.parts):
            if parts:
                at = timeline.block_start[code] + before[code]
                out[at:at + len(parts)] = parts
        code = self.point_code
        return out, start + before[code], end + before[code + 1]


def pair_firsts(events: pa.Table, key: str = "user_id", other: str = "item_id") -> np.ndarray:
    """Per event: is it the earliest of its (key, other) pair? (Of pair events at one time
    any one is marked.) For a batch holding every event of each key, this is exact."""
    if events.num_rows == 0:
        return np.zeros(0, dtype=bool)
    key_code, _ = _codes(events, key)
    other_code, others = _codes(events, other)
    pair = key_code * max(len(others), 1) + other_code
    order = np.lexsort((_times(events), pair))
    first = np.zeros(events.num_rows, dtype=bool)
    new = np.ones(len(order), dtype=bool)
    new[1:] = pair[order][1:] != pair[order][:-1]
    first[order[new]] = True
    return first


def _range_sum(flags: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    cumulative = np.zeros(len(flags) + 1, dtype=np.int64)
    np.cumsum(flags, out=cumulative[1:])
    return cumulative[end] - cumulative[start]


def _times(table: pa.Table) -> np.ndarray:
    if table.column("timestamp").null_count:
        raise ValueError("timestamps must not be null")
    return timestamp_micros(table)


def _query_codes(queries: pa.Table, name: str, dictionary: pa.Array) -> np.ndarray:
    """Code in `dictionary` of each query's key; len(dictionary) for a key without events."""
    query_code, query_dictionary = _codes(queries, name)
    return _map_codes(query_dictionary, dictionary)[query_code]


def _map_codes(keys: pa.Array, dictionary: pa.Array) -> np.ndarray:
    return pc.fill_null(pc.index_in(keys, value_set=dictionary), len(dictionary)).to_numpy(
        zero_copy_only=False).astype(np.int64)


def _codes(table: pa.Table, name: str) -> tuple[np.ndarray, pa.Array]:
    """Integer codes of column `name` and the distinct values they index."""
    values = table.column(name)
    if values.null_count:
        raise ValueError(f"{name} must not be null")
    values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    encoded = pc.dictionary_encode(values)
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def _lexical_codes(table: pa.Table, name: str) -> tuple[np.ndarray, pa.Array]:
    """Codes that order like the values of column `name`, and the sorted distinct values."""
    indices, dictionary = _codes(table, name)
    by_value = pc.sort_indices(dictionary).to_numpy()
    rank = np.empty(len(dictionary), dtype=np.int64)
    rank[by_value] = np.arange(len(dictionary))
    return rank[indices], dictionary.take(pa.array(by_value))


def _nullable(values: np.ndarray, null: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(values, dtype=np.float64), pa.float64(), mask=np.asarray(null, dtype=bool))


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> pa.Array:
    """numerator / denominator in float64; null where the denominator is 0."""
    return _nullable(numerator / np.maximum(denominator, 1), denominator == 0)


def _history_lists(dictionaries: tuple[pa.Array | np.ndarray, ...], codes_sorted: tuple[np.ndarray, ...],
                   end: np.ndarray, length: np.ndarray, of_row: np.ndarray, history: int) -> list[pa.ChunkedArray]:
    """For each (dictionary, codes) pair, per query row: dictionary[codes[end - length : end]]
    of its point, as list<string> (an Arrow dictionary of strings) or list<int32> (a numpy
    one), in chunks of at most `HISTORY_CHUNK_VALUES` values and `HISTORY_CHUNK_BYTES`
    bytes of strings.

    The last `history` codes of every point are gathered once (points are in
    sorted order, so this reads the codes in order); rows then copy their
    point's row of that matrix.
    """
    longest = max([pc.max(pc.binary_length(d)).as_py() or 1 for d in dictionaries
                   if isinstance(d, pa.Array) and len(d)] or [1])
    chunk_rows = max(1, min(HISTORY_CHUNK_VALUES, HISTORY_CHUNK_BYTES // longest) // history)
    matrices = [np.zeros((len(end), history), dtype=codes.dtype) for codes in codes_sorted]
    for lo in range(0, len(end) if len(codes_sorted[0]) else 0, chunk_rows):
        slots = np.maximum(end[lo:lo + chunk_rows, None] + np.arange(-history, 0), 0)
        for matrix, codes in zip(matrices, codes_sorted):
            matrix[lo:lo + chunk_rows] = codes[slots]
    chunks: list[list[pa.Array]] = [[] for _ in dictionaries]
    for lo in range(0, len(of_row), chunk_rows):
        points = of_row[lo:lo + chunk_rows]
        lengths = length[points]
        keep = None if (lengths == history).all() else np.arange(history) >= (history - lengths)[:, None]
        offsets = np.zeros(len(points) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        for out, dictionary, matrix in zip(chunks, dictionaries, matrices):
            block = matrix[points]
            codes = block.reshape(-1) if keep is None else block[keep]  # row by row, oldest first
            if isinstance(dictionary, np.ndarray):
                values = pa.array(dictionary[codes], pa.int32())
            else:
                values = pa.DictionaryArray.from_arrays(pa.array(codes), dictionary).cast(pa.string())
            out.append(pa.ListArray.from_arrays(pa.array(offsets), values))
    return [pa.chunked_array(c, pa.list_(pa.int32() if isinstance(d, np.ndarray) else pa.string()))
            for c, d in zip(chunks, dictionaries)]


def _check_history(history: int) -> None:
    if isinstance(history, bool) or not isinstance(history, (int, np.integer)) or history < 0:
        raise ValueError(f"history must be a whole number >= 0, got {history!r}")
