import math

import numpy as np
import pyarrow as pa
import pytest

from recsys_ray.evaluation import metrics, ranking


def lists(values):
    return pa.array(values, pa.list_(pa.int32()))


def log2(x):
    return math.log2(x)


def test_hand_computed_small_case():
    top = np.array([
        [5, 2, 7, 9],    # relevant {2, 9, 11}: hits at ranks 2 and 4
        [3, 4, 6, 8],    # relevant {8}: hit at rank 4
        [2, 3, 4, 5],    # relevant {1}: an item outside the vocabulary, never a hit
    ])
    relevant = lists([[11, 2, 9], [8], [1]])
    result = metrics.finalize_metrics(metrics.metric_partials(top, relevant, ks=(2, 4)), rankable_items=10)
    assert result["users"] == 3
    # K = 2: user 0 has 1 of 3 (rank 2), the others nothing.
    assert result["recall@2"] == pytest.approx((1 / 3) / 3)
    assert result["hit@2"] == pytest.approx(1 / 3)
    assert result["mrr@2"] == pytest.approx((1 / 2) / 3)
    ndcg0_2 = (1 / log2(3)) / (1 + 1 / log2(3))
    assert result["ndcg@2"] == pytest.approx(ndcg0_2 / 3)
    # K = 4: user 0 has 2 of 3 (ranks 2 and 4), user 1 has 1 of 1 at rank 4.
    assert result["recall@4"] == pytest.approx((2 / 3 + 1) / 3)
    assert result["hit@4"] == pytest.approx(2 / 3)
    assert result["mrr@4"] == pytest.approx((1 / 2 + 1 / 4) / 3)
    ndcg0_4 = (1 / log2(3) + 1 / log2(5)) / (1 + 1 / log2(3) + 1 / log2(4))
    ndcg1_4 = (1 / log2(5)) / 1
    assert result["ndcg@4"] == pytest.approx((ndcg0_4 + ndcg1_4) / 3)
    # Items shown: K = 2 {5, 2, 3, 4}; K = 4 adds 7, 9, 6, 8 (2..5 repeat).
    assert result["coverage@2"] == pytest.approx(4 / 10)
    assert result["coverage@4"] == pytest.approx(8 / 10)
    assert set(result) == {f"{m}@{k}" for m in ("recall", "ndcg", "hit", "mrr", "coverage") for k in (2, 4)} | {
        "users"}


def test_oracle_scores_one_and_reversed_oracle_zero():
    rng = np.random.default_rng(0)
    cardinality, users, k = 60, 25, 10
    relevant = [rng.choice(np.arange(2, cardinality), rng.integers(1, k + 1), replace=False) for _ in range(users)]
    oracle = np.zeros((users, cardinality))
    for row, items in enumerate(relevant):
        oracle[row, items] = 1.0
    no_seen = [[] for _ in range(users)]
    best = metrics.finalize_metrics(metrics.metric_partials(ranking.top_k_from_scores(oracle, no_seen, k),
                                                            relevant, ks=(k,)))
    assert best == {"recall@10": 1.0, "ndcg@10": 1.0, "hit@10": 1.0, "mrr@10": 1.0, "users": users}
    # Reversed: relevant items last; K = 10 is below the 58 - |R| >= 48 other items.
    worst = metrics.finalize_metrics(metrics.metric_partials(ranking.top_k_from_scores(-oracle, no_seen, k),
                                                             relevant, ks=(k,)))
    assert worst == {"recall@10": 0.0, "ndcg@10": 0.0, "hit@10": 0.0, "mrr@10": 0.0, "users": users}


def test_relevant_items_outside_the_vocabulary_stay_in_the_denominator():
    top = np.array([[2, 3]])
    result = metrics.finalize_metrics(metrics.metric_partials(top, lists([[2, 1, 1]]), ks=(2,)))
    assert result["recall@2"] == pytest.approx(1 / 3)
    assert result["ndcg@2"] == pytest.approx(1 / (1 + 1 / log2(3)))
    assert result["hit@2"] == 1.0 and result["mrr@2"] == 1.0


def test_padding_and_larger_widths():
    top = np.array([[4, -1, -1, 99], [-1, -1, -1, -1]])
    result = metrics.finalize_metrics(metrics.metric_partials(top, lists([[4], [5]]), ks=(3,)), rankable_items=4)
    assert result == {"recall@3": 0.5, "ndcg@3": 0.5, "hit@3": 0.5, "mrr@3": 0.5, "coverage@3": 0.25, "users": 2}


def plain_metrics(top, relevant, ks, rankable):
    """Per-user values from the definitions, then plain means."""
    out = {}
    for k in ks:
        values = {"recall": [], "ndcg": [], "hit": [], "mrr": []}
        for row, rel in zip(top, relevant):
            rel = list(rel)
            hits = [1 if (item >= 2 and item in rel) else 0 for item in row[:k]]
            values["recall"].append(sum(hits) / len(rel))
            dcg = sum(h / math.log2(r + 1) for r, h in enumerate(hits, start=1))
            idcg = sum(1 / math.log2(r + 1) for r in range(1, min(len(rel), k) + 1))
            values["ndcg"].append(dcg / idcg)
            values["hit"].append(1.0 if any(hits) else 0.0)
            values["mrr"].append(next((1 / r for r, h in enumerate(hits, start=1) if h), 0.0))
        for name, per_user in values.items():
            out[f"{name}@{k}"] = sum(per_user) / len(per_user)
        out[f"coverage@{k}"] = len({int(i) for i in top[:, :k].ravel() if i >= 2}) / rankable
    out["users"] = len(top)
    return out


def random_case(seed, users=200, cardinality=80, k=20):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 5, (users, cardinality)).astype(float)
    seen = [rng.choice(cardinality, rng.integers(0, 30), replace=False) for _ in range(users)]
    relevant = []
    for row in range(users):
        pool = np.setdiff1d(np.arange(2, cardinality), seen[row])
        chosen = rng.choice(pool, rng.integers(1, 15), replace=False).tolist()
        relevant.append(chosen + [1] * int(rng.integers(0, 3)))  # some outside the vocabulary
    return ranking.top_k_from_scores(scores, seen, k), relevant


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_cases_equal_the_plain_definitions(seed):
    top, relevant = random_case(seed)
    result = metrics.finalize_metrics(metrics.metric_partials(top, relevant, ks=(5, 10, 20)), rankable_items=78)
    expected = plain_metrics(top, relevant, (5, 10, 20), 78)
    assert result.keys() == expected.keys()
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


def test_partials_combined_across_batches_equal_one_batch_exactly():
    top, relevant = random_case(4, users=300)
    ks = (10, 20)
    whole = metrics.metric_partials(top, relevant, ks)
    for bounds in ([0, 300], [0, 1, 150, 151, 300], [0, 7, 7, 99, 250, 300]):
        parts = [metrics.metric_partials(top[lo:hi], relevant[lo:hi], ks) for lo, hi in zip(bounds, bounds[1:])]
        combined = metrics.combine_metric_partials(parts)
        assert combined.equals(metrics.combine_metric_partials(whole))
        assert metrics.finalize_metrics(pa.concat_tables(parts), rankable_items=78) == metrics.finalize_metrics(
            whole, rankable_items=78)
    # Combining is associative: partials of partials.
    halves = [metrics.combine_metric_partials([metrics.metric_partials(top[a:b], relevant[a:b], ks)
                                               for a, b in ((lo, lo + 50), (lo + 50, lo + 150))])
              for lo in (0, 150)]
    assert metrics.combine_metric_partials(halves).equals(metrics.combine_metric_partials(whole))


def test_no_users_gives_zeros():
    empty = metrics.metric_partials(np.zeros((0, 10), np.int32), lists([]), ks=(10,))
    assert metrics.finalize_metrics(empty, rankable_items=5) == {
        "recall@10": 0.0, "ndcg@10": 0.0, "hit@10": 0.0, "mrr@10": 0.0, "coverage@10": 0.0, "users": 0}


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="at least one relevant"):
        metrics.metric_partials(np.array([[2, 3]]), lists([[]]), ks=(2,))
    with pytest.raises(ValueError, match="top_k"):
        metrics.metric_partials(np.array([[2, 3]]), lists([[2]]), ks=(3,))
    with pytest.raises(ValueError, match="relevant lists"):
        metrics.metric_partials(np.array([[2, 3]]), lists([[2], [3]]), ks=(2,))
    with pytest.raises(ValueError, match="ks"):
        metrics.metric_partials(np.array([[2, 3]]), lists([[2]]), ks=(0,))
    a = metrics.metric_partials(np.array([[2, 3]]), lists([[2]]), ks=(1,))
    b = metrics.metric_partials(np.array([[2, 3]]), lists([[2]]), ks=(2,))
    with pytest.raises(ValueError, match="different ks"):
        metrics.combine_metric_partials([a, b])


def test_sampled_metrics_rank_relevant_items_among_the_candidates():
    sampled = lists([[4, 5, 6], [7, 1]])      # user 1 has a sampled candidate outside the vocabulary
    relevant = lists([[3, 1], [8]])           # user 0's second relevant item is outside the vocabulary
    pools = ranking.candidate_pools(sampled, relevant)
    assert pools.to_pylist() == [[4, 5, 6, 3], [7, 1, 8]]
    scores = np.array([0.9, 0.1, 0.2, 0.5, 0.3, 0.0, 0.3])  # aligned with the flattened pools
    top = ranking.pool_top_k(pools, scores, 2)
    assert top.tolist() == [[4, 3], [7, 8]]   # 7 and 8 tie at 0.3: lower index first
    result = metrics.finalize_metrics(metrics.metric_partials(top, relevant, ks=(1, 2)), prefix="sampled_")
    assert result == {
        "sampled_recall@1": 0.0, "sampled_ndcg@1": 0.0, "sampled_hit@1": 0.0, "sampled_mrr@1": 0.0,
        "sampled_recall@2": pytest.approx((1 / 2 + 1) / 2),
        "sampled_ndcg@2": pytest.approx(((1 / log2(3)) / (1 + 1 / log2(3)) + 1 / log2(3)) / 2),
        "sampled_hit@2": 1.0, "sampled_mrr@2": 0.5, "sampled_users": 2}
