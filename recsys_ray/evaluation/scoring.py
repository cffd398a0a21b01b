"""Scoring one batch of the evaluation set: models, index lookups and metric partials.

Pure functions over Arrow tables (no Ray); `recsys_ray.evaluation.run` runs
`block_partials` on every block of `eval/` and combines what they return.

A model is either `Popularity` (ranked without a score matrix) or a *scorer*:
a picklable callable `scorer(batch) -> (batch.num_rows, cardinality)` float32
array scoring every item-vocabulary index (columns 0 and 1 are never ranked).
The batch it gets is an evaluation-set batch (`EVAL_SET`) with the columns of
`with_indices` added: `user_idx` (int32) and `seen_item_idx`,
`relevant_item_idx`, `sampled_candidate_idx` (list<int32>).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_ray.evaluation import metrics, ranking
from recsys_ray.evaluation.lists import flat_lists
from recsys_ray.stages import vocab
from recsys_ray.stages.vocab import RESERVED_INDICES

Scorer = Callable[[pa.Table], np.ndarray]

RANKINGS: tuple[str, ...] = ("full", "sampled")
SAMPLED_PREFIX = "sampled_"
# A block's partials: one `METRIC_PARTIALS` row per ranking.
BLOCK_PARTIALS = pa.schema([pa.field("ranking", pa.string()), *metrics.METRIC_PARTIALS])
# Users ranked at a time within a block: a dense scorer's matrix is users x cardinality
# float32 (256 x 200,002 is 205 MB); popularity needs no matrix.
DENSE_CHUNK_USERS = 256
POPULARITY_CHUNK_USERS = 16_384

LIST_COLUMNS: dict[str, str] = {
    "seen_item_ids": "seen_item_idx",
    "relevant_item_ids": "relevant_item_idx",
    "sampled_candidate_ids": "sampled_candidate_idx",
}


def distinct_users_by_index(item_vocabulary: pa.Table, item_ids: pa.Array | pa.ChunkedArray,
                            unique_users: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """int64 array of the vocabulary's cardinality: entry j, the distinct users of index j.

    `item_ids` / `unique_users` are per-item counts (the version's item features:
    `item_id`, `item_unique_users`); an index whose item has no row counts 0, and
    so do the reserved indices 0 and 1.
    """
    cardinality = vocab.vocabulary_cardinality(item_vocabulary)
    out = np.zeros(cardinality, dtype=np.int64)
    if len(item_ids) == 0 or item_vocabulary.num_rows == 0:
        return out
    index = vocab.lookup_indices(item_ids, item_vocabulary).to_numpy(zero_copy_only=False).astype(np.int64)
    users = pc.fill_null(unique_users, 0)
    users = (users.combine_chunks() if isinstance(users, pa.ChunkedArray) else users).to_numpy(
        zero_copy_only=False).astype(np.int64)
    known = index >= RESERVED_INDICES
    out[index[known]] = users[known]
    return out


@dataclass(frozen=True)
class Popularity:
    """The popularity model: items by training-window distinct users descending, ties by index.

    Scores an item by its distinct users, so an unknown item (index 1) scores 0
    and ranks after every vocabulary item in a sampled pool.
    """

    distinct_users: np.ndarray
    order: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "distinct_users", np.asarray(self.distinct_users, dtype=np.int64))
        object.__setattr__(self, "order", ranking.popularity_order(self.distinct_users))

    @property
    def cardinality(self) -> int:
        return len(self.distinct_users)

    def top_k(self, seen: pa.Array, k: int) -> np.ndarray:
        return ranking.popularity_top_k(self.order, seen, k)

    def pool_scores(self, pools: pa.Array) -> np.ndarray:
        _, values, _ = flat_lists(pools)
        return self.distinct_users[values].astype(np.float64)


@dataclass(frozen=True)
class RandomScorer:
    """The random model as a scorer: `ranking.random_scores` of each user id under `seed`."""

    cardinality: int
    seed: int

    def __call__(self, batch: pa.Table) -> np.ndarray:
        return ranking.random_scores(batch.column("user_id"), self.cardinality, self.seed)


def with_indices(batch: pa.Table, item_vocabulary: pa.Table, user_vocabulary: pa.Table | None = None) -> pa.Table:
    """The evaluation-set batch with its list columns looked up in the item vocabulary
    (`seen_item_idx`, `relevant_item_idx`, `sampled_candidate_idx`: list<int32>, 1 for an
    item outside it) and, given the user vocabulary, `user_idx` (int32, 1 for a user outside it)."""
    for source, target in LIST_COLUMNS.items():
        batch = batch.append_column(target, vocab.lookup_list_indices(batch.column(source), item_vocabulary)
                                    .cast(pa.list_(pa.int32())))
    if user_vocabulary is not None:
        batch = batch.append_column("user_idx", vocab.lookup_indices(batch.column("user_id"), user_vocabulary))
    return batch


def block_partials(batch: pa.Table, *, model: "Popularity | Scorer", item_vocabulary: pa.Table,
                   user_vocabulary: pa.Table | None = None, ks: Sequence[int] = metrics.DEFAULT_KS,
                   chunk_users: int | None = None) -> pa.Table:
    """`BLOCK_PARTIALS` of a batch of evaluation-set rows: full ranking, then sampled.

    Users are ranked `chunk_users` at a time (default: `POPULARITY_CHUNK_USERS` for
    `Popularity`, else `DENSE_CHUNK_USERS`) and their partials combined, which is
    exact: the result does not depend on the chunking or on how users are batched.
    """
    k_max = max(int(k) for k in ks)
    cardinality = vocab.vocabulary_cardinality(item_vocabulary)
    is_popularity = isinstance(model, Popularity)
    if is_popularity and model.cardinality != cardinality:
        raise ValueError(f"popularity over {model.cardinality} indices for a vocabulary of {cardinality}")
    chunk = chunk_users or (POPULARITY_CHUNK_USERS if is_popularity else DENSE_CHUNK_USERS)
    if chunk < 1:
        raise ValueError(f"chunk_users must be positive, got {chunk}")
    if batch.num_rows == 0:
        return empty_partials(ks)
    full: list[pa.Table] = []
    sampled: list[pa.Table] = []
    indexed = with_indices(batch, item_vocabulary, None if is_popularity else user_vocabulary)
    for start in range(0, indexed.num_rows, chunk):
        part = indexed.slice(start, chunk)
        seen = _column(part, "seen_item_idx")
        relevant = _column(part, "relevant_item_idx")
        pools = ranking.candidate_pools(_column(part, "sampled_candidate_idx"), relevant)
        if is_popularity:
            top = model.top_k(seen, k_max)
            pool_scores = model.pool_scores(pools)
        else:
            scores = _check_scores(model(part), part.num_rows, cardinality)
            top = ranking.top_k_from_scores(scores, seen, k_max)
            rows, values, _ = flat_lists(pools)
            pool_scores = scores[rows, values]
        full.append(metrics.metric_partials(top, relevant, ks))
        sampled.append(metrics.metric_partials(ranking.pool_top_k(pools, pool_scores, k_max), relevant, ks))
    out = []
    for name, parts in zip(RANKINGS, (full, sampled)):
        combined = metrics.combine_metric_partials(parts)
        out.append(combined.add_column(0, "ranking", pa.array([name], pa.string())))
    return pa.concat_tables(out).cast(BLOCK_PARTIALS)


def finish_metrics(partials: pa.Table, rankable_items: int) -> dict:
    """The metrics of combined block partials: `finalize_metrics` of the full ranking (with
    coverage over `rankable_items`), then of the sampled ranking with the `sampled_` prefix
    (no coverage; its user count is `users` again and is left out)."""
    out: dict = {}
    for name in RANKINGS:
        rows = partials.filter(pc.equal(partials.column("ranking"), name)).select(metrics.METRIC_PARTIALS.names)
        if name == "full":
            out.update(metrics.finalize_metrics(rows, rankable_items))
        else:
            sampled = metrics.finalize_metrics(rows, prefix=SAMPLED_PREFIX)
            sampled.pop(f"{SAMPLED_PREFIX}users")
            out.update(sampled)
    return out


def empty_partials(ks: Sequence[int] = metrics.DEFAULT_KS) -> pa.Table:
    """`BLOCK_PARTIALS` of no users (what an empty evaluation set gives)."""
    k_max = max(int(k) for k in ks)
    none = metrics.metric_partials(np.zeros((0, k_max), np.int64), pa.array([], pa.list_(pa.int32())), ks)
    return pa.concat_tables([none.add_column(0, "ranking", pa.array([name], pa.string()))
                             for name in RANKINGS]).cast(BLOCK_PARTIALS)


def _check_scores(scores, users: int, cardinality: int) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.shape != (users, cardinality):
        raise ValueError(f"the scorer returned shape {scores.shape} for {users} users; expected "
                         f"({users}, {cardinality}): one score per item-vocabulary index")
    return scores


def _column(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name)
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)

