"""Scoring a batch of the evaluation set: lookups, models and partials that combine exactly."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from recsys_ray.evaluation import scoring
from recsys_ray.stages.eval_set import EVAL_SET
from recsys_ray.stages.vocab import make_vocabulary

# Items by training events: i0 (5), i1 (4), i2 (3), i3 (2), i4 (1) -> indices 2..6.
ITEM_VOCAB = make_vocabulary(pa.table({"value": ["i3", "i0", "i4", "i1", "i2"], "count": [2, 5, 1, 4, 3]}))
USER_VOCAB = make_vocabulary(pa.table({"value": ["a", "b"], "count": [3, 1]}))
# Distinct training users of i0..i4: i2 and i3 tie with i0's index deciding nothing (i0 has 1).
UNIQUE = pa.table({"item_id": ["i0", "i1", "i2", "i3", "i4", "gone"], "item_unique_users": [1, 4, 3, 3, 2, 9]})


def eval_batch(rows: list[tuple[str, list[str], list[str], list[str]]]) -> pa.Table:
    users, relevant, seen, sampled = zip(*rows)
    return pa.table({"user_id": list(users), "relevant_item_ids": list(relevant), "seen_item_ids": list(seen),
                     "sampled_candidate_ids": list(sampled)}, schema=EVAL_SET)


BATCH = eval_batch([
    ("a", ["i2", "new"], ["i1"], ["i0", "i4"]),
    ("b", ["i0"], [], ["i1", "zz"]),
    ("c", ["i4", "i3"], ["i2", "i1", "i0"], ["i9"]),
    ("d", ["cold"], ["i3"], []),
])


def popularity() -> scoring.Popularity:
    return scoring.Popularity(scoring.distinct_users_by_index(ITEM_VOCAB, UNIQUE.column("item_id"),
                                                              UNIQUE.column("item_unique_users")))


def test_distinct_users_by_index():
    # index: 2=i0, 3=i1, 4=i2, 5=i3, 6=i4; "gone" is not in the vocabulary.
    assert popularity().distinct_users.tolist() == [0, 0, 1, 4, 3, 3, 2]
    # i1 (4), then i2 and i3 (3, by index), i4 (2), i0 (1).
    assert popularity().order.tolist() == [3, 4, 5, 6, 2]


def test_with_indices():
    out = scoring.with_indices(BATCH, ITEM_VOCAB, USER_VOCAB)
    assert out.column("user_idx").to_pylist() == [2, 3, 1, 1]
    assert out.column("relevant_item_idx").to_pylist() == [[4, 1], [2], [6, 5], [1]]
    assert out.column("seen_item_idx").to_pylist() == [[3], [], [4, 3, 2], [5]]
    assert out.column("sampled_candidate_idx").to_pylist() == [[2, 6], [3, 1], [1], []]
    assert out.schema.field("seen_item_idx").type == pa.list_(pa.int32())
    assert "user_idx" not in scoring.with_indices(BATCH, ITEM_VOCAB).column_names


def per_user_metrics(ranked: list[list[int]], relevant: list[list[int]], k: int) -> dict:
    """The definitions, one user at a time."""
    out = {"recall": [], "ndcg": [], "hit": [], "mrr": []}
    for top, rel in zip(ranked, relevant):
        top = top[:k]
        hits = [r for r, item in enumerate(top, 1) if item >= 2 and item in rel]
        idcg = sum(1 / math.log2(r + 1) for r in range(1, min(len(rel), k) + 1))
        out["recall"].append(len(hits) / len(rel))
        out["ndcg"].append(sum(1 / math.log2(r + 1) for r in hits) / idcg)
        out["hit"].append(1.0 if hits else 0.0)
        out["mrr"].append(1 / hits[0] if hits else 0.0)
    return {name: sum(values) / len(values) for name, values in out.items()}


def test_popularity_by_hand():
    result = scoring.finish_metrics(scoring.block_partials(BATCH, model=popularity(), item_vocabulary=ITEM_VOCAB,
                                                           ks=(1, 3)), rankable_items=5)
    # Popularity order 3, 4, 5, 6, 2 without each user's seen items.
    full = [[4, 5, 6], [3, 4, 5], [5, 6, -1], [3, 4, 6]]
    relevant = [[4, 1], [2], [6, 5], [1]]
    # Pools: sampled then relevant in the vocabulary, by distinct users (index 1 scores 0), ties by index.
    sampled = [[4, 6, 2], [3, 2, 1], [5, 6, 1], []]
    for k in (1, 3):
        for name, value in per_user_metrics(full, relevant, k).items():
            assert result[f"{name}@{k}"] == pytest.approx(value, abs=1e-15)
        for name, value in per_user_metrics([s + [-1] * 3 for s in sampled], relevant, k).items():
            assert result[f"sampled_{name}@{k}"] == pytest.approx(value, abs=1e-15)
    assert result["recall@1"] == pytest.approx((0.5 + 0 + 1 / 2 + 0) / 4)
    assert result["coverage@1"] == 3 / 5 and result["coverage@3"] == 4 / 5
    assert result["users"] == 4 and "sampled_users" not in result and "sampled_coverage@1" not in result


class PopularityScores:
    """Popularity as a dense scorer: the same ranking through the score-matrix path."""

    def __init__(self, model: scoring.Popularity) -> None:
        self.scores = model.distinct_users.astype(np.float32)

    def __call__(self, batch: pa.Table) -> np.ndarray:
        assert batch.column("user_idx").type == pa.int32()
        return np.broadcast_to(self.scores, (batch.num_rows, len(self.scores))).copy()


def test_dense_scorer_path_equals_popularity_path():
    model = popularity()
    fast = scoring.block_partials(BATCH, model=model, item_vocabulary=ITEM_VOCAB, ks=(1, 2, 5))
    dense = scoring.block_partials(BATCH, model=PopularityScores(model), item_vocabulary=ITEM_VOCAB,
                                   user_vocabulary=USER_VOCAB, ks=(1, 2, 5))
    assert fast.equals(dense)


@pytest.mark.parametrize("model_name", ["popularity", "random"])
def test_partials_do_not_depend_on_chunks_or_batches(model_name):
    rng = np.random.default_rng(4)
    items = [f"i{j}" for j in range(5)] + ["x", "y"]
    rows = []
    for u in range(23):
        picks = rng.permutation(items)
        rows.append((f"u{u:02d}", list(picks[:2]), list(picks[2:2 + rng.integers(0, 3)]), list(picks[4:])))
    batch = eval_batch(rows)
    model = popularity() if model_name == "popularity" else scoring.RandomScorer(7, seed=3)
    kwargs = {"model": model, "item_vocabulary": ITEM_VOCAB, "user_vocabulary": USER_VOCAB, "ks": (2, 4)}
    whole = scoring.finish_metrics(scoring.block_partials(batch, **kwargs), 5)
    for chunk in (1, 5, 100):
        assert scoring.finish_metrics(scoring.block_partials(batch, chunk_users=chunk, **kwargs), 5) == whole
    parts = pa.concat_tables([scoring.block_partials(batch.slice(0, 9), **kwargs),
                              scoring.block_partials(batch.slice(9), **kwargs),
                              scoring.block_partials(batch.slice(0, 0), **kwargs)])
    assert scoring.finish_metrics(parts, 5) == whole
    assert whole["users"] == 23


def test_empty_and_bad_scores():
    empty = scoring.finish_metrics(scoring.empty_partials((10,)), 5)
    assert empty == {"recall@10": 0.0, "ndcg@10": 0.0, "hit@10": 0.0, "mrr@10": 0.0, "coverage@10": 0.0,
                     "users": 0, "sampled_recall@10": 0.0, "sampled_ndcg@10": 0.0, "sampled_hit@10": 0.0,
                     "sampled_mrr@10": 0.0}
    with pytest.raises(ValueError, match=r"shape \(4, 3\) for 4 users; expected \(4, 7\)"):
        scoring.block_partials(BATCH, model=lambda b: np.zeros((b.num_rows, 3), np.float32),
                               item_vocabulary=ITEM_VOCAB, ks=(1,))
