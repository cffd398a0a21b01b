"""Positives, negatives and shard assignment for training examples.

Negative sampling is exact and reproducible without coordination between
workers: each positive owns an endless stream of hash-derived draws keyed by
(seed, user, item, split), and its negatives are the first K distinct draws
that the user never interacted with. The batch holds all of a user's events, so
the exclusion is exact; the draw stream depends only on row identity, so the
result is the same whatever the parallelism or worker count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_ray import hashing, schemas
from recsys_ray.stages.split import split_events, timestamp_micros

_SHARD_SALT = 0x5EED5A17
_FALLBACK_SALT = 1 << 40
_ROUNDS = 4
_PAIRWISE_MAX_DRAWS = 32
_LABELLED = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("split", pa.string()),
                       ("timestamp", schemas.TIMESTAMP), ("label", pa.float32())])


@dataclass(frozen=True)
class Candidates:
    """Items negatives are drawn from, with draw weights; a frozen global value.

    `item_ids` is sorted; an item's code is its index. Items with weight 0 are
    never drawn (popularity sampling of items nobody used in the window). The
    codes are looked up through `hashing.ValuePositions`, built once with the set.
    """

    item_ids: pa.Array
    weights: np.ndarray
    positions: hashing.ValuePositions = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", hashing.ValuePositions.of(self.item_ids))

    @property
    def size(self) -> int:
        return len(self.item_ids)

    def codes(self, item_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Code of each item id, -1 for items outside the candidate set."""
        return self.positions.positions(item_ids)


def make_candidates(item_ids: pa.Array, popularity: np.ndarray | None, sampling: str,
                    alpha: float) -> Candidates:
    """Candidate set: uniform weights, or popularity ** alpha (popularity >= 0)."""
    order = pc.sort_indices(item_ids)
    item_ids = pc.take(item_ids, order)
    if sampling == "uniform":
        weights = np.ones(len(item_ids), dtype=np.float64)
    else:
        if popularity is None:
            raise ValueError("popularity sampling needs item popularity")
        weights = np.power(np.asarray(popularity, dtype=np.float64)[order.to_numpy()], alpha)
        weights[~np.isfinite(weights)] = 0.0
    return Candidates(item_ids.combine_chunks() if isinstance(item_ids, pa.ChunkedArray) else item_ids, weights)


def select_positives(events: pa.Table, positive_types: tuple[str, ...]) -> pa.Table:
    """One positive per (user, item, split): the latest event of a positive type."""
    mask = pc.is_in(events.column("interaction_type"), value_set=pa.array(positive_types))
    positive = events.filter(mask).select(["user_id", "item_id", "split", "timestamp"])
    latest = positive.group_by(["user_id", "item_id", "split"], use_threads=False).aggregate([("timestamp", "max")])
    return latest.rename_columns(["user_id", "item_id", "split", "timestamp"])


def positive_hashes(positives: pa.Table, seed: int) -> np.ndarray:
    split_code = np.where(pc.equal(positives.column("split"), "test").to_numpy(zero_copy_only=False), 1, 0)
    return hashing.combine(np.uint64(seed & 0xFFFFFFFFFFFFFFFF),
                           hashing.hash_strings(positives.column("user_id")),
                           hashing.hash_strings(positives.column("item_id")),
                           split_code.astype(np.uint64))


def sample_negatives(positives: pa.Table, seen_events: pa.Table, candidates: Candidates, k: int,
                     seed: int) -> pa.Table:
    """K negatives per positive: distinct, never an item the user has seen.

    `seen_events` must hold every event of every user in `positives`. A user
    who has seen (almost) every candidate gets fewer negatives, never a hang.
    Returns user_id, item_id, split, timestamp rows (label added by the caller).
    """
    empty = pa.table({"user_id": pa.array([], pa.string()), "item_id": pa.array([], pa.string()),
                      "split": pa.array([], pa.string()), "timestamp": pa.array([], schemas.TIMESTAMP)})
    n_items = candidates.size
    n_pos = positives.num_rows
    if k == 0 or n_pos == 0 or n_items == 0 or not (candidates.weights > 0).any():
        return empty
    users = pc.unique(seen_events.column("user_id"))
    pos_user = pc.index_in(positives.column("user_id"), value_set=users).to_numpy(zero_copy_only=False)
    seen_user = pc.index_in(seen_events.column("user_id"), value_set=users).to_numpy(zero_copy_only=False)
    seen_item = candidates.codes(seen_events.column("item_id"))
    known = seen_item >= 0
    seen_keys = _sorted_unique(seen_user[known].astype(np.int64) * n_items + seen_item[known])

    cdf = np.cumsum(candidates.weights)
    uniform = bool((candidates.weights == 1.0).all())
    total = cdf[-1]
    pos_hash = positive_hashes(positives, seed)
    chosen = np.full((n_pos, k), -1, dtype=np.int64)
    pending = np.arange(n_pos)
    draws = 2 * k + 4
    for _ in range(_ROUNDS):
        if len(pending) == 0:
            break
        codes = _draw(pos_hash[pending], draws, cdf, total, uniform)
        filled = _first_unseen_distinct(codes, pos_user[pending], seen_keys, n_items, k)
        complete = (filled >= 0).all(axis=1)
        chosen[pending[complete]] = filled[complete]
        pending = pending[~complete]
        draws *= 8
    for row in pending:
        chosen[row] = _exhaustive(pos_hash[row], int(pos_user[row]), seen_keys, candidates.weights, k)

    rows, slots = np.nonzero(chosen >= 0)
    if len(rows) == 0:
        return empty
    taken = positives.select(["user_id", "split", "timestamp"]).take(pa.array(rows))
    item_ids = candidates.item_ids.take(pa.array(chosen[rows, slots]))
    return pa.table({"user_id": taken.column("user_id"), "item_id": item_ids,
                     "split": taken.column("split"), "timestamp": taken.column("timestamp")})


def _draw(pos_hash: np.ndarray, draws: int, cdf: np.ndarray, total: float, uniform: bool) -> np.ndarray:
    """Weighted draws with replacement: (positives, draws) candidate codes."""
    j = np.arange(draws, dtype=np.uint64)
    u = hashing.to_unit_interval(hashing.combine(pos_hash[:, None], j[None, :]))
    if uniform:
        # Unit weights: cdf is exactly 1..n, so the search below reduces to floor(u * n).
        return np.minimum((u * total).astype(np.int64), len(cdf) - 1)
    return np.minimum(np.searchsorted(cdf, u * total, side="right"), len(cdf) - 1)


def _first_unseen_distinct(codes: np.ndarray, users: np.ndarray, seen_keys: np.ndarray, n_items: int,
                           k: int) -> np.ndarray:
    """Per row, the first k distinct codes (in draw order) the row's user has not seen; -1 pads."""
    n_rows, draws = codes.shape
    flat = codes.ravel()
    if draws <= _PAIRWISE_MAX_DRAWS:
        # A draw is a first occurrence when no earlier draw in its row equals it.
        earlier = np.tril(np.ones((draws, draws), dtype=bool), k=-1)
        keep = ~((codes[:, :, None] == codes[:, None, :]) & earlier).any(axis=2).ravel()
    else:
        row_of = np.repeat(np.arange(n_rows, dtype=np.int64), draws)
        _, first = np.unique(row_of * n_items + flat, return_index=True)
        keep = np.zeros(flat.shape, dtype=bool)
        keep[first] = True
    keep &= ~_is_seen(np.repeat(users.astype(np.int64), draws) * n_items + flat, seen_keys)
    kept = np.flatnonzero(keep)
    kept_rows = kept // draws
    row_start = np.searchsorted(kept_rows, np.arange(n_rows))
    rank = np.arange(len(kept)) - row_start[kept_rows]
    take = rank < k
    out = np.full((n_rows, k), -1, dtype=np.int64)
    out[kept_rows[take], rank[take]] = flat[kept[take]]
    return out


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    ordered = np.sort(values)
    if len(ordered) < 2:
        return ordered
    return ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])]


def _is_seen(keys: np.ndarray, seen_keys: np.ndarray) -> np.ndarray:
    """Membership in the sorted, unique `seen_keys` by binary search (no sort of `keys`)."""
    if len(seen_keys) == 0:
        return np.zeros(keys.shape, dtype=bool)
    at = np.minimum(np.searchsorted(seen_keys, keys), len(seen_keys) - 1)
    return seen_keys[at] == keys


def _exhaustive(pos_hash: np.uint64, user: int, seen_keys: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """Exact fallback for a user who has seen most candidates: weighted sampling
    without replacement over what is left (Efraimidis-Spirakis keys)."""
    n_items = len(weights)
    lo, hi = np.searchsorted(seen_keys, [user * n_items, (user + 1) * n_items])
    seen = np.zeros(n_items, dtype=bool)
    seen[seen_keys[lo:hi] - user * n_items] = True
    available = np.flatnonzero(~seen & (weights > 0))
    out = np.full(k, -1, dtype=np.int64)
    if len(available) <= k:
        out[: len(available)] = available
        return out
    u = hashing.to_unit_interval(hashing.combine(pos_hash, available.astype(np.uint64) + _FALLBACK_SALT))
    keys = np.log(np.maximum(u, 1e-300)) / weights[available]
    out[:] = available[np.argsort(-keys, kind="stable")[:k]]
    return out


def count_positives(events: pa.Table, *, cutoff_us: int, strategy: str,
                    positive_types: tuple[str, ...]) -> pa.Table:
    """Positives per split in a batch holding whole users: (split, positives) rows."""
    if events.num_rows == 0:
        return pa.table({"split": pa.array([], pa.string()), "positives": pa.array([], pa.int64())})
    positives = select_positives(split_events(events, cutoff_us, strategy, positive_types), positive_types)
    counts = positives.group_by("split", use_threads=False).aggregate([("split", "count")])
    return pa.table({"split": counts.column("split"), "positives": pc.cast(counts.column("split_count"), pa.int64())})


def label_examples(
    events: pa.Table,
    *,
    cutoff_us: int,
    strategy: str,
    positive_types: tuple[str, ...],
    candidates: Candidates,
    negatives: int,
    seed: int,
) -> pa.Table:
    """Positives and their negatives for a batch holding whole users, without features.

    `events` are valid, de-duplicated events. Columns: user_id, item_id, split,
    timestamp, label (float32). Kept narrow so that shuffling rows into shards
    moves as little as possible; `training_rows` adds the feature columns.
    """
    if events.num_rows == 0:
        return _LABELLED.empty_table()
    events = split_events(events, cutoff_us, strategy, positive_types)
    positives = select_positives(events, positive_types)
    sampled = sample_negatives(positives, events, candidates, negatives, seed)
    return pa.concat_tables([
        positives.append_column("label", pa.array(np.ones(positives.num_rows, np.float32))).cast(_LABELLED),
        sampled.append_column("label", pa.array(np.zeros(sampled.num_rows, np.float32))).cast(_LABELLED),
    ])


def assign_shards(rows: pa.Table, shards_per_split: dict[str, int], seed: int) -> pa.Table:
    """Add `_shard` (uniform by row hash) and `_order` (the row's place in its shard).

    Both come from the row's identity and the seed alone, so each shard holds
    the same rows in the same order whatever the parallelism.
    """
    split = rows.column("split")
    is_test = pc.equal(split, "test").to_numpy(zero_copy_only=False)
    h = hashing.combine(
        np.uint64((seed ^ _SHARD_SALT) & 0xFFFFFFFFFFFFFFFF),
        hashing.hash_strings(rows.column("user_id")),
        hashing.hash_strings(rows.column("item_id")),
        timestamp_micros(rows).astype(np.uint64),
        rows.column("label").to_numpy(zero_copy_only=False).astype(np.uint64),
        is_test.astype(np.uint64),
    )
    n = np.where(is_test, shards_per_split.get("test", 1), shards_per_split.get("train", 1))
    shard = np.minimum((hashing.to_unit_interval(h) * n).astype(np.int64), n - 1)
    return rows.append_column("_shard", pa.array(shard, pa.int32())).append_column(
        "_order", pa.array(h.view(np.int64)))


def shard_keys(rows: pa.Table) -> np.ndarray:
    """One int64 per row that orders rows as (split ascending, `_shard` ascending): the
    split's rank among the batch's splits in Arrow's string order, then the shard."""
    encoded = pc.dictionary_encode(rows.column("split").combine_chunks())
    rank = np.empty(len(encoded.dictionary), dtype=np.int64)
    rank[pc.sort_indices(encoded.dictionary).to_numpy()] = np.arange(len(encoded.dictionary), dtype=np.int64)
    shard = rows.column("_shard").to_numpy().astype(np.int64)
    return (rank[encoded.indices.to_numpy(zero_copy_only=False)] << np.int64(32)) | (shard & np.int64(0xFFFFFFFF))


def by_shard(rows: pa.Table) -> pa.Table:
    """`rows` (which carry `split` and `_shard`) sorted by (split, shard), the order within a
    shard kept; returned as they are when already in that order, so that rows sorted while
    narrow are not copied again once wide."""
    if rows.num_rows < 2:
        return rows
    keys = shard_keys(rows)
    if (keys[1:] >= keys[:-1]).all():
        return rows
    return rows.take(pa.array(np.argsort(keys, kind="stable")))


def shard_groups(rows: pa.Table):
    """(split, shard, rows) for every shard present in `rows` (which carry `_shard`): one sort
    (`by_shard`), then slices."""
    if rows.num_rows == 0:
        return
    ordered = by_shard(rows)
    keys = shard_keys(ordered)
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    ends = np.append(starts[1:], len(keys))
    splits = ordered.column("split").take(pa.array(starts)).to_pylist()
    shards = ordered.column("_shard").take(pa.array(starts)).to_pylist()
    for split_name, shard, start, end in zip(splits, shards, starts.tolist(), ends.tolist()):
        yield split_name, shard, ordered.slice(start, end - start)


def order_shard(rows: pa.Table) -> pa.Table:
    """Rows of one shard in their final order, internal columns dropped."""
    order_key = rows.column("_order").to_numpy()
    by_key = np.argsort(order_key, kind="stable")
    ordered_keys = order_key[by_key]
    if len(ordered_keys) > 1 and (ordered_keys[1:] == ordered_keys[:-1]).any():
        # Equal hashes are rare; break ties by the row's values, never its position.
        by_key = pc.sort_indices(rows, sort_keys=[("_order", "ascending"), ("user_id", "ascending"),
                                                  ("item_id", "ascending"), ("timestamp", "ascending"),
                                                  ("label", "ascending")])
    return rows.drop_columns(["_shard", "_order"]).take(by_key)
