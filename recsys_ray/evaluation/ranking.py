"""Top-K lists over the item vocabulary: from a score matrix, by popularity, or over sampled pools.

Full ranking ranks every item-vocabulary index from 2 (0 is padding, 1 is
out-of-vocabulary) that is not in the user's seen list. Ties are broken by
item index ascending (the vocabulary's order: more training events first), so
a top-K is a function of the scores alone. A user with fewer than K rankable
items gets a list padded with -1.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from recsys_ray import hashing
from recsys_ray.evaluation.lists import IndexLists, flat_lists, sorted_unique
from recsys_ray.stages.vocab import RESERVED_INDICES

PAD = -1
_RANDOM_SALT = 0x8A4D0C5E


def top_k_from_scores(scores: np.ndarray, seen: IndexLists, k: int) -> np.ndarray:
    """(users, k) int32 item indices, best first, from a (users, cardinality) score matrix.

    Column j scores vocabulary index j; columns 0 and 1 and each row's seen
    indices are never ranked. Scores must be finite. Higher is better; equal
    scores rank by index ascending.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a (users, items) matrix, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    users, cardinality = scores.shape
    out = np.full((users, k), PAD, dtype=np.int32)
    width = min(k, cardinality - RESERVED_INDICES)
    if users == 0 or width <= 0:
        return out
    masked = scores.astype(np.float64 if scores.dtype.kind != "f" else scores.dtype, copy=True)
    masked[:, :RESERVED_INDICES] = -np.inf
    rows, values, lengths = flat_lists(seen)
    if len(lengths) != users:
        raise ValueError(f"{len(lengths)} seen lists for {users} users")
    inside = (values >= 0) & (values < cardinality)
    masked[rows[inside], values[inside]] = -np.inf

    chosen = np.argpartition(masked, cardinality - width, axis=1)[:, cardinality - width:]
    threshold = np.take_along_axis(masked, chosen, axis=1).min(axis=1)
    # argpartition picks any of the items tied at the threshold; where more are
    # tied than fit, take the lowest indices among them instead.
    at_least = (masked >= threshold[:, None]).sum(axis=1)
    tied = np.flatnonzero(at_least > width)
    if len(tied):
        block = masked[tied]
        above = block > threshold[tied, None]
        equal = block == threshold[tied, None]
        room = width - above.sum(axis=1)
        keep = above | (equal & (np.cumsum(equal, axis=1, dtype=np.int32) <= room[:, None]))
        chosen[tied] = np.nonzero(keep)[1].reshape(len(tied), width)
    chosen = np.sort(chosen, axis=1)
    chosen_scores = np.take_along_axis(masked, chosen, axis=1)
    order = np.argsort(-chosen_scores, axis=1, kind="stable")
    ranked = np.take_along_axis(chosen, order, axis=1)
    ranked[np.take_along_axis(chosen_scores, order, axis=1) == -np.inf] = PAD
    out[:, :width] = ranked
    return out


def popularity_order(distinct_users: np.ndarray) -> np.ndarray:
    """Item indices from 2 by training-window distinct users descending, then index ascending.

    `distinct_users[j]` is the number of distinct training-window users of
    vocabulary index j (entries 0 and 1 are ignored).
    """
    distinct_users = np.asarray(distinct_users)
    indices = np.arange(RESERVED_INDICES, len(distinct_users))
    return indices[np.argsort(-distinct_users[RESERVED_INDICES:], kind="stable")].astype(np.int64)


def popularity_top_k(order: np.ndarray, seen: IndexLists, k: int) -> np.ndarray:
    """(users, k) int32: for each user the first k items of `order` not in their seen list.

    Never builds a (users, items) matrix: with the seen items' positions in
    `order` sorted per user as s_0 < s_1 < ..., the j-th unseen position is
    j + #{i : s_i - i <= j}, one binary search per (user, j).
    """
    order = np.asarray(order, dtype=np.int64)
    rows, values, lengths = flat_lists(seen)
    users, ranked = len(lengths), len(order)
    out = np.full((users, k), PAD, dtype=np.int32)
    if users == 0 or ranked == 0 or k <= 0:
        return out
    position = np.full(int(order.max()) + 1, -1, dtype=np.int64)
    position[order] = np.arange(ranked)
    inside = (values >= 0) & (values < len(position))
    rows, values = rows[inside], values[inside]
    at = position[values]
    rows, at = rows[at >= 0], at[at >= 0]
    # Distinct (user, position) keys in sorted order: by user, then by position.
    keys, _ = sorted_unique(rows * ranked + at)
    key_rows, key_at = keys // ranked, keys % ranked
    start = np.searchsorted(key_rows, np.arange(users))
    adjusted = key_at - (np.arange(len(keys)) - start[key_rows])
    base = ranked + k + 1
    composite = key_rows * base + adjusted
    j = np.arange(k, dtype=np.int64)
    query = np.arange(users, dtype=np.int64)[:, None] * base + j[None, :]
    skipped = np.searchsorted(composite, query, side="right") - start[:, None]
    unseen_at = j[None, :] + skipped
    valid = unseen_at < ranked
    out[valid] = order[unseen_at[valid]]
    return out


def random_scores(user_ids: pa.Array | pa.ChunkedArray, cardinality: int, seed: int) -> np.ndarray:
    """(users, cardinality) float32 scores in [0, 1) of the random model.

    Row u is the stream of NumPy's default generator seeded with (seed, hash of
    the user id): the same user gets the same scores in any batch, at any position.
    """
    user_hash = hashing.hash_strings(user_ids)
    scores = np.empty((len(user_hash), cardinality), dtype=np.float32)
    salted = (seed ^ _RANDOM_SALT) & 0xFFFFFFFFFFFFFFFF
    # One generator per user (a loop over users, each a vectorised draw of every
    # item): an order of magnitude cheaper than hashing each (user, item) pair.
    for row, key in enumerate(user_hash.tolist()):
        np.random.default_rng([salted, key]).random(dtype=np.float32, out=scores[row])
    return scores


def candidate_pools(sampled: IndexLists, relevant: IndexLists) -> pa.ListArray:
    """Per user, the sampled candidates' indices followed by the relevant items in the vocabulary.

    What sampled metrics rank. Relevant items outside the vocabulary (index
    below 2) are left out: they cannot be ranked and count as misses.
    """
    s_rows, s_values, s_lengths = flat_lists(sampled)
    r_rows, r_values, r_lengths = flat_lists(relevant)
    if len(s_lengths) != len(r_lengths):
        raise ValueError(f"{len(s_lengths)} sampled lists for {len(r_lengths)} relevant lists")
    known = r_values >= RESERVED_INDICES
    rows = np.concatenate([s_rows, r_rows[known]])
    values = np.concatenate([s_values, r_values[known]])
    order = np.argsort(rows, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(s_lengths)))])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values[order], pa.int32()))


def pool_top_k(pools: IndexLists, pool_scores: np.ndarray, k: int) -> np.ndarray:
    """(users, k) int32: each user's pool entries ranked by score, best first, -1 padded.

    `pool_scores` holds one finite score per pool entry, aligned with the
    flattened pools. Ties rank by index ascending, then by place in the pool.
    """
    rows, values, lengths = flat_lists(pools)
    pool_scores = np.asarray(pool_scores, dtype=np.float64)
    if pool_scores.shape != values.shape:
        raise ValueError(f"{len(pool_scores)} scores for {len(values)} pool entries")
    if not np.isfinite(pool_scores).all():
        raise ValueError("scores must be finite")
    out = np.full((len(lengths), k), PAD, dtype=np.int32)
    order = np.lexsort((values, -pool_scores, rows))
    start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rank = np.arange(len(order)) - start[rows[order]]
    take = rank < k
    out[rows[order][take], rank[take]] = values[order][take]
    return out
