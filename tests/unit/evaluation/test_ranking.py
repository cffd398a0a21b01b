import numpy as np
import pyarrow as pa
import pytest

from recsys_ray.evaluation import ranking
from recsys_ray.evaluation.lists import flat_lists


def plain_top_k(scores, seen, k):
    """Sort each row's rankable items by (score descending, index ascending)."""
    out = []
    for row, excluded in zip(scores, seen):
        excluded = {int(i) for i in excluded}
        items = [j for j in range(2, len(row)) if j not in excluded]
        ranked = sorted(items, key=lambda j: (-row[j], j))[:k]
        out.append(ranked + [-1] * (k - len(ranked)))
    return np.array(out, dtype=np.int32).reshape(len(scores), k)


def test_ties_rank_by_index_and_seen_items_and_reserved_columns_are_skipped():
    scores = np.array([
        [9.0, 9.0, 1.0, 3.0, 1.0, 3.0, 1.0],   # 0 and 1 are never ranked
        [0.0, 0.0, 2.0, 2.0, 2.0, 2.0, 2.0],   # all tied: by index
    ])
    top = ranking.top_k_from_scores(scores, [[3], [2, 6]], 3)
    assert top.dtype == np.int32
    assert top.tolist() == [[5, 2, 4], [3, 4, 5]]


def test_ties_at_the_cut_take_the_lowest_indices():
    # Eleven items tie behind the best one: argpartition may hand back any two of them.
    scores = np.array([[0, 0, 5, *([1] * 11)]], dtype=float)
    assert ranking.top_k_from_scores(scores, [[]], 3).tolist() == [[2, 3, 4]]
    best_last = np.array([[0, 0, *([1] * 11), 5]], dtype=float)
    assert ranking.top_k_from_scores(best_last, [[]], 3).tolist() == [[13, 2, 3]]
    rows = np.repeat(best_last, 4, axis=0)
    assert ranking.top_k_from_scores(rows, [[2], [], [3, 13], [13]], 3).tolist() == [
        [13, 3, 4], [13, 2, 3], [2, 4, 5], [2, 3, 4]]


def test_fewer_rankable_items_than_k_pad_with_minus_one():
    scores = np.arange(6, dtype=float)[None, :].repeat(2, axis=0)
    top = ranking.top_k_from_scores(scores, [[5, 4], [2, 3, 4, 5]], 4)
    assert top.tolist() == [[3, 2, -1, -1], [-1, -1, -1, -1]]
    assert ranking.top_k_from_scores(scores[:, :2], [[], []], 3).tolist() == [[-1] * 3] * 2
    assert ranking.top_k_from_scores(np.zeros((0, 9)), [], 5).shape == (0, 5)


@pytest.mark.parametrize("seed", range(5))
def test_equals_a_plain_sort_on_random_scores_with_many_ties(seed):
    rng = np.random.default_rng(seed)
    users, cardinality = 40, 70
    scores = rng.integers(0, 4, (users, cardinality)).astype(np.float32)
    seen = [rng.integers(0, cardinality + 5, rng.integers(0, 40)) for _ in range(users)]  # duplicates, 0, 1, beyond
    for k in (1, 5, 20, 69, 80):
        assert np.array_equal(ranking.top_k_from_scores(scores, seen, k), plain_top_k(scores, seen, k)), k


def test_seen_lists_as_arrow_lists_and_bad_scores():
    scores = np.array([[0, 0, 1, 2, 3.0]])
    assert ranking.top_k_from_scores(scores, pa.array([[4]], pa.list_(pa.int32())), 2).tolist() == [[3, 2]]
    with pytest.raises(ValueError, match="finite"):
        ranking.top_k_from_scores(np.array([[0, 0, np.nan, 1.0]]), [[]], 1)
    with pytest.raises(ValueError, match="seen lists"):
        ranking.top_k_from_scores(scores, [[], []], 1)
    with pytest.raises(ValueError, match="matrix"):
        ranking.top_k_from_scores(np.zeros(5), [[]], 1)


def test_popularity_order_ranks_by_distinct_users_then_index():
    distinct_users = np.array([99, 99, 3, 7, 3, 7, 1])
    assert ranking.popularity_order(distinct_users).tolist() == [3, 5, 2, 4, 6]


@pytest.mark.parametrize("seed", range(6))
def test_popularity_ranking_equals_the_score_matrix_ranking(seed):
    rng = np.random.default_rng(seed)
    cardinality, users = int(rng.integers(3, 90)), 50
    distinct_users = rng.integers(1, 6, cardinality)  # many ties
    order = ranking.popularity_order(distinct_users)
    seen = [rng.integers(0, cardinality + 3, rng.integers(0, cardinality)) for _ in range(users)]
    scores = np.broadcast_to(distinct_users.astype(float), (users, cardinality))
    for k in (1, 10, cardinality + 2):
        expected = ranking.top_k_from_scores(scores, seen, k)
        assert np.array_equal(ranking.popularity_top_k(order, seen, k), expected), k
        assert np.array_equal(expected, plain_top_k(scores, seen, k)), k


def test_popularity_top_k_skips_seen_items_in_order():
    order = np.array([7, 3, 9, 2, 5])
    seen = pa.array([[7, 3], [9, 5, 2], [], None, [7, 3, 9, 2, 5, 11]], pa.list_(pa.int32()))
    assert ranking.popularity_top_k(order, seen, 3).tolist() == [
        [9, 2, 5], [7, 3, -1], [7, 3, 9], [7, 3, 9], [-1, -1, -1]]
    assert ranking.popularity_top_k(order, [], 3).shape == (0, 3)


def test_random_scores_depend_on_the_user_and_seed_only():
    users = pa.array(["a", "b", "c"])
    scores = ranking.random_scores(users, 50, seed=1)
    assert scores.shape == (3, 50) and (scores >= 0).all() and (scores < 1).all()
    again = ranking.random_scores(pa.chunked_array([["c"], ["a"]]), 50, seed=1)
    assert np.array_equal(again, scores[[2, 0]]), "the same user gets the same scores at any position"
    assert not np.array_equal(ranking.random_scores(users, 50, seed=2), scores)
    assert len({tuple(ranking.top_k_from_scores(scores, [[]] * 3, 5)[r]) for r in range(3)}) == 3


def test_pool_ranking_breaks_ties_by_index_then_position():
    pools = pa.array([[5, 3, 1, 1], [], [9]], pa.list_(pa.int32()))
    scores = np.array([1.0, 1.0, 2.0, 2.0, 0.5])
    assert ranking.pool_top_k(pools, scores, 3).tolist() == [[1, 1, 3], [-1, -1, -1], [9, -1, -1]]
    with pytest.raises(ValueError, match="scores for"):
        ranking.pool_top_k(pools, scores[:3], 3)
    with pytest.raises(ValueError, match="finite"):
        ranking.pool_top_k(pools, np.array([1, 1, np.inf, 1, 1.0]), 3)


def test_candidate_pools_append_known_relevant_items():
    pools = ranking.candidate_pools([[4, 5], [], [6]], [[2, 1], [3], [1]])
    assert pools.type == pa.list_(pa.int32())
    assert pools.to_pylist() == [[4, 5, 2], [3], [6]]
    with pytest.raises(ValueError, match="sampled lists"):
        ranking.candidate_pools([[4]], [[2], [3]])


def test_flat_lists_reads_arrow_and_python_lists_alike():
    arrow = pa.array([[3, None], None, [], [7]], pa.list_(pa.int32())).slice(0, 4)
    rows, values, lengths = flat_lists(arrow)
    assert rows.tolist() == [0, 0, 3] and values.tolist() == [3, 0, 7] and lengths.tolist() == [2, 0, 0, 1]
    rows, values, lengths = flat_lists([[3, 0], [], [], [7]])
    assert rows.tolist() == [0, 0, 3] and values.tolist() == [3, 0, 7] and lengths.tolist() == [2, 0, 0, 1]
    with pytest.raises(TypeError, match="list"):
        flat_lists(pa.array([1, 2]))
