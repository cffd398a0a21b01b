"""Ranking metrics from per-user top-K lists and relevant sets, summable across batches.

For a user with relevant items R (vocabulary indices; |R| is the length of the
list, items outside the vocabulary, index 1, included) and a ranked list
t_1, t_2, ... (index; -1 pads), with hit_r = [t_r in R and t_r >= 2]:

- Recall@K = sum_{r<=K} hit_r / |R|
- NDCG@K = DCG / IDCG, DCG = sum_{r<=K} hit_r / log2(r + 1), IDCG the DCG of
  min(|R|, K) hits at ranks 1.. (binary relevance)
- HitRate@K = 1 if any hit_r (r <= K) else 0
- MRR@K = 1 / (first r <= K with hit_r), else 0
and over all users, each per-user value's mean, and Coverage@K = distinct
items (index >= 2) in any user's top-K / the number of rankable items.

`metric_partials` reduces a batch of users to integer counts only (users per
first-hit rank, per (min(|R|, K_max), hit rank), per (K, hits, |R|), and each
covered item's best rank), so `combine_metric_partials` adds batches exactly
and `finalize_metrics` gives the same numbers whatever the batching: every
mean is an exactly rounded sum (math.fsum) of terms computed from the counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_ray.evaluation.lists import IndexLists, flat_lists, sorted_unique
from recsys_ray.stages.vocab import RESERVED_INDICES

DEFAULT_KS: tuple[int, ...] = (10, 20)

_COUNTS = pa.list_(pa.int64())
METRIC_PARTIALS = pa.schema([
    pa.field("ks", pa.list_(pa.int32())),
    pa.field("users", pa.int64()),
    # [r - 1]: users whose first hit is at rank r (1..K_max); [K_max]: users without a hit.
    pa.field("first_hit", _COUNTS),
    # [(m - 1) * K_max + (r - 1)]: users with min(|R|, K_max) = m and a hit at rank r.
    pa.field("hits_by_ideal", _COUNTS),
    # Sparse (K, hits, |R|) -> users, for users with at least one hit.
    pa.field("recall_k", _COUNTS),
    pa.field("recall_hits", _COUNTS),
    pa.field("recall_relevant", _COUNTS),
    pa.field("recall_users", _COUNTS),
    # Every item in some top-K_max, with its best (smallest) rank.
    pa.field("covered_items", _COUNTS),
    pa.field("covered_rank", _COUNTS),
])


def metric_partials(top_k: np.ndarray, relevant: IndexLists, ks: Sequence[int] = DEFAULT_KS) -> pa.Table:
    """One `METRIC_PARTIALS` row for a batch of users.

    `top_k` is (users, width >= max(ks)) item indices, best first, -1 padded;
    `relevant` the users' relevant-item indices (one non-empty list per row).
    """
    ks = _check_ks(ks)
    k_max = ks[-1]
    top = np.asarray(top_k, dtype=np.int64)
    if top.ndim != 2 or top.shape[1] < k_max:
        raise ValueError(f"top_k must be (users, >= {k_max}), got shape {top.shape}")
    top = top[:, :k_max]
    users = top.shape[0]
    rows, values, lengths = flat_lists(relevant)
    if len(lengths) != users:
        raise ValueError(f"{len(lengths)} relevant lists for {users} users")
    if users and lengths.min() == 0:
        raise ValueError("every user needs at least one relevant item")

    span = int(max(top.max(initial=0), values.max(initial=0))) + 1
    known = values >= RESERVED_INDICES
    relevant_keys, _ = sorted_unique(rows[known] * span + values[known])
    hit = top >= RESERVED_INDICES
    keys = np.arange(users, dtype=np.int64)[:, None] * span + top
    if len(relevant_keys):
        at = np.minimum(np.searchsorted(relevant_keys, keys), len(relevant_keys) - 1)
        hit &= relevant_keys[at] == keys
    else:
        hit[:] = False

    any_hit = hit.any(axis=1)
    first = np.where(any_hit, hit.argmax(axis=1), k_max)
    first_hit = np.bincount(first, minlength=k_max + 1)
    ideal = np.minimum(lengths, k_max)
    hit_rows, hit_ranks = np.nonzero(hit)
    hits_by_ideal = np.bincount((ideal[hit_rows] - 1) * k_max + hit_ranks, minlength=k_max * k_max)

    # (K, hits, |R|) of each user with a hit, as one integer key, then users per key.
    cumulative = np.cumsum(hit, axis=1)
    size_span = int(lengths.max(initial=0)) + 1
    parts = []
    for k in ks:
        hits = cumulative[:, k - 1]
        some = hits > 0
        parts.append((k * (k_max + 1) + hits[some]) * size_span + lengths[some])
    keys = np.sort(np.concatenate(parts))
    triples, first_key = sorted_unique(keys)  # keys are sorted: first_key are positions in them
    recall_users = np.diff(np.append(first_key, len(keys)))
    recall_k, rest = np.divmod(triples, (k_max + 1) * size_span)
    recall = [recall_k, *np.divmod(rest, size_span)]

    ranked = top.T.ravel()  # rank 1 of every user, then rank 2, ...
    shown = np.flatnonzero(ranked >= RESERVED_INDICES)
    covered, first_seen = sorted_unique(ranked[shown])
    covered_rank = shown[first_seen] // max(users, 1) + 1

    return pa.table({
        "ks": [list(ks)], "users": [users], "first_hit": [first_hit.tolist()],
        "hits_by_ideal": [hits_by_ideal.tolist()],
        "recall_k": [recall[0].tolist()], "recall_hits": [recall[1].tolist()],
        "recall_relevant": [recall[2].tolist()], "recall_users": [recall_users.tolist()],
        "covered_items": [covered.tolist()], "covered_rank": [covered_rank.tolist()],
    }, schema=METRIC_PARTIALS)


def combine_metric_partials(partials: pa.Table | Sequence[pa.Table]) -> pa.Table:
    """One `METRIC_PARTIALS` row adding up the rows of `partials` (all with the same ks)."""
    table = partials if isinstance(partials, pa.Table) else pa.concat_tables(list(partials))
    if table.num_rows == 0:
        raise ValueError("no partials to combine")
    ks_values = {tuple(ks) for ks in table.column("ks").to_pylist()}
    if len(ks_values) != 1:
        raise ValueError(f"partials computed for different ks: {sorted(ks_values)}")
    ks = list(ks_values.pop())

    def summed(name: str) -> list[int]:
        return np.sum(np.array(table.column(name).to_pylist(), dtype=np.int64), axis=0).tolist()

    recall = pa.table({name: _flat(table, name) for name in
                       ("recall_k", "recall_hits", "recall_relevant", "recall_users")})
    recall = recall.group_by(["recall_k", "recall_hits", "recall_relevant"], use_threads=False).aggregate(
        [("recall_users", "sum")]).sort_by([("recall_k", "ascending"), ("recall_hits", "ascending"),
                                            ("recall_relevant", "ascending")])
    covered = pa.table({"item": _flat(table, "covered_items"), "rank": _flat(table, "covered_rank")})
    covered = covered.group_by("item", use_threads=False).aggregate([("rank", "min")]).sort_by("item")
    return pa.table({
        "ks": [ks], "users": [int(pc.sum(table.column("users")).as_py())],
        "first_hit": [summed("first_hit")], "hits_by_ideal": [summed("hits_by_ideal")],
        "recall_k": [recall.column("recall_k").to_pylist()],
        "recall_hits": [recall.column("recall_hits").to_pylist()],
        "recall_relevant": [recall.column("recall_relevant").to_pylist()],
        "recall_users": [recall.column("recall_users_sum").to_pylist()],
        "covered_items": [covered.column("item").to_pylist()],
        "covered_rank": [covered.column("rank_min").to_pylist()],
    }, schema=METRIC_PARTIALS)


def finalize_metrics(partials: pa.Table, rankable_items: int | None = None, prefix: str = "") -> dict:
    """Means over users as {f"{prefix}recall@K", "ndcg@K", "hit@K", "mrr@K", "coverage@K", "users"}.

    `partials` may hold several rows (they are combined first). Coverage is
    reported when `rankable_items` (item-vocabulary values from index 2) is
    given. With no users every mean is 0.0.
    """
    row = combine_metric_partials(partials).to_pylist()[0]
    ks, users = row["ks"], row["users"]
    k_max = ks[-1]
    first_hit = row["first_hit"]
    hits_by_ideal = np.array(row["hits_by_ideal"], dtype=np.int64).reshape(k_max, k_max)
    discount = [1.0 / math.log2(rank + 1) for rank in range(1, k_max + 1)]
    ideal = [math.fsum(discount[:m]) for m in range(1, k_max + 1)]
    recall = list(zip(row["recall_k"], row["recall_hits"], row["recall_relevant"], row["recall_users"]))
    covered_rank = np.array(row["covered_rank"], dtype=np.int64)

    def mean(terms) -> float:
        return math.fsum(terms) / users if users else 0.0

    out: dict[str, float | int] = {}
    for k in ks:
        out[f"{prefix}recall@{k}"] = mean(n_users * hits / size for kk, hits, size, n_users in recall if kk == k)
        out[f"{prefix}ndcg@{k}"] = mean(int(hits_by_ideal[m - 1, r - 1]) * discount[r - 1] / ideal[min(m, k) - 1]
                                        for m in range(1, k_max + 1) for r in range(1, k + 1))
        out[f"{prefix}hit@{k}"] = mean(first_hit[r - 1] for r in range(1, k + 1))
        out[f"{prefix}mrr@{k}"] = mean(first_hit[r - 1] / r for r in range(1, k + 1))
        if rankable_items is not None:
            out[f"{prefix}coverage@{k}"] = (int((covered_rank <= k).sum()) / rankable_items
                                            if rankable_items > 0 else 0.0)
    out[f"{prefix}users"] = users
    return out


def _check_ks(ks: Sequence[int]) -> list[int]:
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive cut-offs, got {ks}")
    return ks


def _flat(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name)
    return pc.list_flatten(column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)).cast(pa.int64())
