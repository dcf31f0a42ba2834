"""Unit tests for hybridrec.evaluation.metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from hybridrec.errors import DataError
from hybridrec.evaluation.metrics import (
    METRICS,
    average_precision_at_k,
    catalog_coverage,
    count_relevant,
    hit_rate_at_k,
    hits_matrix,
    intra_list_diversity,
    ndcg_at_k,
    novelty,
    precision_at_k,
    recall_at_k,
    reciprocal_rank_at_k,
)

T, F = True, False

# Four users, k = 4:
#   u0: hits at ranks 1 and 3, 2 relevant items
#   u1: no hits, 3 relevant items
#   u2: hit at rank 2, 5 relevant items (more than k)
#   u3: no hits, no relevant items
HITS = np.array(
    [
        [T, F, T, F],
        [F, F, F, F],
        [F, T, F, F],
        [F, F, F, F],
    ]
)
N_REL = np.array([2, 3, 5, 0])


def lg(x: float) -> float:
    return math.log2(x)


# ------------------------------------------------------------------------------------------
# hits_matrix / count_relevant
# ------------------------------------------------------------------------------------------


def _relevant(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in items]
    return sp.csr_matrix((np.ones(len(c)), (r, c)), shape=(len(rows), n_items))


def test_hits_matrix_marks_relevant_items_and_never_padding() -> None:
    # Item 5 is the last column: a naive relevant[u, -1] lookup would read padding as item 5.
    relevant = _relevant([[1, 4, 5], [], [5]], n_items=6)
    topk = np.array([[3, 1, -1], [0, 2, 4], [5, -1, -1]])
    expected = np.array([[F, T, F], [F, F, F], [T, F, F]])
    np.testing.assert_array_equal(hits_matrix(topk, relevant), expected)


def test_hits_matrix_ignores_explicit_zeros_and_handles_unsorted_indices() -> None:
    # Row 0 stores items (4, 1) out of order plus an explicit zero at item 2.
    data = np.array([1.0, 0.0, 1.0, 1.0])
    indices = np.array([4, 2, 1, 0])
    indptr = np.array([0, 3, 4])
    relevant = sp.csr_matrix((data, indices, indptr), shape=(2, 5))
    topk = np.array([[1, 2, 4], [3, 0, -1]])
    expected = np.array([[T, F, T], [F, T, F]])
    np.testing.assert_array_equal(hits_matrix(topk, relevant), expected)
    np.testing.assert_array_equal(count_relevant(relevant), [2, 1])
    # The caller's matrix must not be re-sorted in place.
    np.testing.assert_array_equal(relevant.indices, indices)


@pytest.mark.parametrize("fmt", ["csr_matrix", "csr_array", "csc", "coo"])
def test_hits_matrix_accepts_sparse_formats(fmt: str) -> None:
    base = _relevant([[0, 2], [1]], n_items=3)
    relevant = {
        "csr_matrix": base,
        "csr_array": sp.csr_array(base),
        "csc": base.tocsc(),
        "coo": base.tocoo(),
    }[fmt]
    topk = np.array([[2, 1], [1, -1]], dtype=np.int32)
    np.testing.assert_array_equal(hits_matrix(topk, relevant), [[T, F], [T, F]])


def test_hits_matrix_matches_set_lookup_on_random_data() -> None:
    rng = np.random.default_rng(1)
    n_users, n_items, k = 200, 40, 7
    relevant = sp.random(n_users, n_items, density=0.15, format="csr", random_state=rng)
    topk = np.stack([rng.permutation(n_items)[:k] for _ in range(n_users)])
    topk[rng.random(topk.shape) < 0.2] = -1
    rel_sets = [set(relevant[u].indices.tolist()) for u in range(n_users)]
    expected = np.array([[i >= 0 and i in rel_sets[u] for i in row] for u, row in enumerate(topk)])
    np.testing.assert_array_equal(hits_matrix(topk, relevant), expected)


def test_hits_matrix_slicing_equals_shorter_list() -> None:
    rng = np.random.default_rng(2)
    relevant = sp.random(50, 30, density=0.2, format="csr", random_state=rng)
    topk = np.stack([rng.permutation(30)[:20] for _ in range(50)])
    np.testing.assert_array_equal(
        hits_matrix(topk, relevant)[:, :10], hits_matrix(topk[:, :10], relevant)
    )


def test_hits_matrix_row_mismatch_raises() -> None:
    relevant = _relevant([[0], [1], [2]], n_items=3)
    with pytest.raises(DataError, match=r"topk has 2 user rows but relevant has 3"):
        hits_matrix(np.array([[0], [1]]), relevant)


@pytest.mark.parametrize(
    ("topk", "match"),
    [
        (np.array([0, 1]), "topk must be a 2-D"),
        (np.array([[0.0, 1.0]]), "topk must hold integer"),
        (np.array([[0, -2]]), "topk holds -2"),
        (np.array([[0, 3]]), "item index 3 but relevant covers only 3 items"),
    ],
)
def test_hits_matrix_bad_topk_raises(topk: np.ndarray, match: str) -> None:
    with pytest.raises(DataError, match=match):
        hits_matrix(topk, _relevant([[0]], n_items=3))


def test_hits_matrix_dense_relevant_raises() -> None:
    with pytest.raises(DataError, match="relevant must be a 2-D scipy sparse"):
        hits_matrix(np.array([[0]]), np.ones((1, 3)))


# ------------------------------------------------------------------------------------------
# Accuracy metrics
# ------------------------------------------------------------------------------------------


def test_precision() -> None:
    # u0: 2/4, u1: 0/4, u2: 1/4, u3: 0/4
    np.testing.assert_allclose(precision_at_k(HITS), [0.5, 0.0, 0.25, 0.0])


def test_recall() -> None:
    # u0: 2/2, u1: 0/3, u2: 1/5 (denominator is n_relevant, not min(n_relevant, k)), u3: 0
    np.testing.assert_allclose(recall_at_k(HITS, N_REL), [1.0, 0.0, 0.2, 0.0])


def test_average_precision() -> None:
    # u0: (P@1 * 1 + P@3 * 1) / min(2, 4) = (1/1 + 2/3) / 2 = 5/6
    # u2: (P@2 * 1) / min(5, 4) = (1/2) / 4 = 1/8
    np.testing.assert_allclose(average_precision_at_k(HITS, N_REL), [5 / 6, 0.0, 1 / 8, 0.0])


def test_ndcg() -> None:
    # u0: DCG = 1/log2(2) + 1/log2(4); IDCG (2 relevant) = 1/log2(2) + 1/log2(3)
    # u2: DCG = 1/log2(3); IDCG (min(5, 4) = 4) = 1/log2(2) + 1/log2(3) + 1/log2(4) + 1/log2(5)
    u0 = (1 / lg(2) + 1 / lg(4)) / (1 / lg(2) + 1 / lg(3))
    u2 = (1 / lg(3)) / (1 / lg(2) + 1 / lg(3) + 1 / lg(4) + 1 / lg(5))
    np.testing.assert_allclose(ndcg_at_k(HITS, N_REL), [u0, 0.0, u2, 0.0])


def test_hit_rate_and_reciprocal_rank() -> None:
    np.testing.assert_allclose(hit_rate_at_k(HITS), [1.0, 0.0, 1.0, 0.0])
    # u0: first hit at rank 1 -> 1/1; u2: first hit at rank 2 -> 1/2
    np.testing.assert_allclose(reciprocal_rank_at_k(HITS), [1.0, 0.0, 0.5, 0.0])


def test_perfect_list_scores_one_even_with_more_relevant_than_k() -> None:
    hits = np.array([[T, T, T]])
    n_rel = np.array([10])
    np.testing.assert_allclose(ndcg_at_k(hits, n_rel), [1.0])
    np.testing.assert_allclose(average_precision_at_k(hits, n_rel), [1.0])
    np.testing.assert_allclose(recall_at_k(hits, n_rel), [0.3])


def test_metrics_at_2_by_slicing() -> None:
    h2 = HITS[:, :2]
    np.testing.assert_allclose(precision_at_k(h2), [0.5, 0.0, 0.5, 0.0])
    # u0 finds 1 of 2; u2 finds 1 of 5
    np.testing.assert_allclose(recall_at_k(h2, N_REL), [0.5, 0.0, 0.2, 0.0])
    # u0: (1/1) / min(2, 2) = 1/2; u2: (1/2) / min(5, 2) = 1/4
    np.testing.assert_allclose(average_precision_at_k(h2, N_REL), [0.5, 0.0, 0.25, 0.0])
    # u0: 1 / (1 + 1/log2(3)); u2: (1/log2(3)) / (1 + 1/log2(3))
    idcg2 = 1 + 1 / lg(3)
    np.testing.assert_allclose(ndcg_at_k(h2, N_REL), [1 / idcg2, 0.0, (1 / lg(3)) / idcg2, 0.0])
    np.testing.assert_allclose(reciprocal_rank_at_k(h2), [1.0, 0.0, 0.5, 0.0])


def test_zero_relevant_users_score_zero_not_nan() -> None:
    hits = np.zeros((3, 5), dtype=bool)
    n_rel = np.zeros(3, dtype=np.int64)
    for name, fn in METRICS.items():
        out = fn(hits, n_rel)
        assert out.dtype == np.float64, name
        np.testing.assert_array_equal(out, np.zeros(3), err_msg=name)


def test_metrics_registry_matches_functions() -> None:
    assert set(METRICS) == {"precision", "recall", "map", "ndcg", "hit_rate", "mrr"}
    direct = {
        "precision": precision_at_k(HITS),
        "recall": recall_at_k(HITS, N_REL),
        "map": average_precision_at_k(HITS, N_REL),
        "ndcg": ndcg_at_k(HITS, N_REL),
        "hit_rate": hit_rate_at_k(HITS),
        "mrr": reciprocal_rank_at_k(HITS),
    }
    for name, fn in METRICS.items():
        np.testing.assert_allclose(fn(HITS, N_REL), direct[name], err_msg=name)


def test_hits_must_be_boolean() -> None:
    # An index array passed by mistake must not be read as "nonzero means hit".
    with pytest.raises(DataError, match="hits must have dtype bool"):
        precision_at_k(np.array([[3, 0, 1]]))


@pytest.mark.parametrize(
    ("n_rel", "match"),
    [
        (np.array([2, 3, 5]), r"n_relevant must have shape \(4,\)"),
        (np.array([2, 3, 5, -1]), "n_relevant holds -1"),
        (np.array([2.0, 3.0, 5.0, 0.0]), "n_relevant must hold integer"),
        (np.array([1, 3, 5, 0]), "more hits than n_relevant allows for 1 user row"),
    ],
)
def test_bad_n_relevant_raises(n_rel: np.ndarray, match: str) -> None:
    with pytest.raises(DataError, match=match):
        ndcg_at_k(HITS, n_rel)


def test_hits_shape_errors() -> None:
    with pytest.raises(DataError, match="hits must be a 2-D"):
        hit_rate_at_k(np.array([T, F]))
    with pytest.raises(DataError, match="cutoff k must be at least 1"):
        reciprocal_rank_at_k(np.zeros((2, 0), dtype=bool))


# ------------------------------------------------------------------------------------------
# Property test: vectorized metrics vs a per-user Python reference
# ------------------------------------------------------------------------------------------


def _reference(ranked: list[int], rel: set[int], k: int) -> dict[str, float]:
    ranked = ranked[:k]
    hit = [i >= 0 and i in rel for i in ranked]
    n_hits = sum(hit)
    ideal_n = min(len(rel), k)
    dcg = sum(1 / math.log2(j + 2) for j, h in enumerate(hit) if h)
    idcg = sum(1 / math.log2(j + 2) for j in range(ideal_n))
    ap = 0.0
    seen = 0
    for j, h in enumerate(hit):
        if h:
            seen += 1
            ap += seen / (j + 1)
    first = next((j for j, h in enumerate(hit) if h), None)
    return {
        "precision": n_hits / k,
        "recall": n_hits / len(rel) if rel else 0.0,
        "map": ap / ideal_n if ideal_n else 0.0,
        "ndcg": dcg / idcg if idcg else 0.0,
        "hit_rate": 1.0 if n_hits else 0.0,
        "mrr": 1 / (first + 1) if first is not None else 0.0,
    }


@pytest.mark.parametrize("k", [1, 5, 10])
def test_vectorized_metrics_match_python_reference(k: int) -> None:
    rng = np.random.default_rng(12345)
    n_users, n_items, width = 300, 60, 10
    rel_sets = [
        set(rng.choice(n_items, size=rng.integers(0, 12), replace=False).tolist())
        for _ in range(n_users)
    ]
    relevant = _relevant([sorted(s) for s in rel_sets], n_items)
    topk = np.stack([rng.permutation(n_items)[:width] for _ in range(n_users)])
    # Pad the tail of some lists, as a recommender that ran out of candidates would.
    short = rng.integers(0, width + 1, size=n_users)
    topk[np.arange(width)[None, :] >= short[:, None]] = -1

    hits = hits_matrix(topk, relevant)[:, :k]
    n_rel = count_relevant(relevant)
    np.testing.assert_array_equal(n_rel, [len(s) for s in rel_sets])
    refs = [_reference(topk[u].tolist(), rel_sets[u], k) for u in range(n_users)]
    for name, fn in METRICS.items():
        expected = np.array([r[name] for r in refs])
        np.testing.assert_allclose(fn(hits, n_rel), expected, rtol=1e-12, atol=1e-12, err_msg=name)


# ------------------------------------------------------------------------------------------
# Beyond-accuracy metrics
# ------------------------------------------------------------------------------------------


def test_catalog_coverage() -> None:
    # Distinct items {0, 1, 2} out of 10; padding is not an item.
    topk = np.array([[0, 1, -1], [1, 2, -1]])
    assert catalog_coverage(topk, n_items=10) == pytest.approx(0.3)
    assert catalog_coverage(np.full((2, 3), -1), n_items=4) == 0.0
    assert catalog_coverage(np.array([[0, 1], [2, 3]]), n_items=4) == pytest.approx(1.0)


def test_catalog_coverage_errors() -> None:
    with pytest.raises(DataError, match="n_items must be positive"):
        catalog_coverage(np.array([[0]]), n_items=0)
    with pytest.raises(DataError, match="item index 4 but n_items covers only 4"):
        catalog_coverage(np.array([[4]]), n_items=4)


VECS = np.array(
    [
        [1.0, 0.0],  # 0
        [1.0, 1.0],  # 1
        [0.0, 1.0],  # 2
        [0.0, 0.0],  # 3: zero vector
        [3.0, 0.0],  # 4: same direction as 0
        [-1.0, 0.0],  # 5: opposite to 0
    ]
)


@pytest.mark.parametrize("as_sparse", [False, True])
def test_intra_list_diversity_by_hand(as_sparse: bool) -> None:
    vectors = sp.csr_matrix(VECS) if as_sparse else VECS
    topk = np.array(
        [
            [0, 2, -1],  # orthogonal -> 1 - 0 = 1
            [0, 4, -1],  # identical direction -> 1 - 1 = 0
            [0, 1, 2],  # cos: (0,1)=1/sqrt2, (0,2)=0, (1,2)=1/sqrt2 -> 1 - (2/sqrt2)/3
            [0, 3, -1],  # zero vector has similarity 0 -> 1
            [0, 5, -1],  # opposite -> 1 - (-1) = 2 (dense only; sparse stores it too)
            [1, -1, -1],  # one valid item -> NaN
            [-1, -1, -1],  # none -> NaN
            [0, 1, -1],  # 1 - 1/sqrt2
        ]
    )
    expected = [1.0, 0.0, 1 - math.sqrt(2) / 3, 1.0, 2.0, np.nan, np.nan, 1 - 1 / math.sqrt(2)]
    np.testing.assert_allclose(
        intra_list_diversity(topk, vectors), expected, rtol=1e-12, atol=1e-12
    )


def test_intra_list_diversity_orthogonal_and_identical_sets() -> None:
    eye = np.eye(4)
    np.testing.assert_allclose(intra_list_diversity(np.array([[0, 1, 2, 3]]), eye), [1.0])
    same = np.tile([[0.3, 0.4, 0.5]], (4, 1))
    np.testing.assert_allclose(
        intra_list_diversity(np.array([[0, 1, 2, 3]]), same), [0.0], atol=1e-12
    )


def test_intra_list_diversity_sparse_dense_and_reference_agree() -> None:
    rng = np.random.default_rng(7)
    n_users, n_items, dim, k = 120, 30, 8, 6
    dense = rng.random((n_items, dim)) * (rng.random((n_items, dim)) < 0.4)
    dense[[3, 11]] = 0.0  # zero rows must be handled, not divide by zero
    topk = np.stack([rng.permutation(n_items)[:k] for _ in range(n_users)])
    topk[rng.random(topk.shape) < 0.25] = -1

    norms = np.linalg.norm(dense, axis=1)
    unit = np.divide(dense, norms[:, None], out=np.zeros_like(dense), where=norms[:, None] > 0)
    expected = np.full(n_users, np.nan)
    for u in range(n_users):
        items = [i for i in topk[u] if i >= 0]
        sims = [unit[a] @ unit[b] for x, a in enumerate(items) for b in items[x + 1 :]]
        if sims:
            expected[u] = 1 - np.mean(sims)

    got_dense = intra_list_diversity(topk, dense)
    # Small chunks exercise the chunk boundaries, including a ragged last chunk.
    got_dense_chunked = intra_list_diversity(topk, dense, chunk_size=7)
    got_sparse = intra_list_diversity(topk, sp.csr_matrix(dense), chunk_size=13)
    for got in (got_dense, got_dense_chunked, got_sparse):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_intra_list_diversity_errors() -> None:
    with pytest.raises(DataError, match="item_vectors must be 2-D"):
        intra_list_diversity(np.array([[0, 1]]), np.ones(3))
    with pytest.raises(DataError, match="item index 3 but item_vectors covers only 3"):
        intra_list_diversity(np.array([[0, 3]]), np.eye(3))
    with pytest.raises(DataError, match="chunk_size must be positive"):
        intra_list_diversity(np.array([[0, 1]]), np.eye(3), chunk_size=0)


def test_novelty_by_hand() -> None:
    # n_users = 8; popularity [4, 2, 0, 8] -> p = [1/2, 1/4, (0 -> 1/8), 1]
    # self-information -log2(p) = [1, 2, 3, 0] bits
    pop = np.array([4, 2, 0, 8])
    topk = np.array([[0, 1, -1], [2, 3, 0], [-1, -1, -1]])
    # u0: (1 + 2) / 2 = 1.5; u1: (3 + 0 + 1) / 3 = 4/3; u2: no items -> NaN
    np.testing.assert_allclose(novelty(topk, pop, n_users=8), [1.5, 4 / 3, np.nan])


def test_novelty_errors() -> None:
    with pytest.raises(DataError, match="n_users must be positive"):
        novelty(np.array([[0]]), np.array([1]), n_users=0)
    with pytest.raises(DataError, match="item_popularity must lie in"):
        novelty(np.array([[0]]), np.array([9]), n_users=8)
    with pytest.raises(DataError, match="item_popularity must be 1-D"):
        novelty(np.array([[0]]), np.ones((1, 1)), n_users=8)
    with pytest.raises(DataError, match="item index 2 but item_popularity covers only 2"):
        novelty(np.array([[0, 2]]), np.array([1, 1]), n_users=8)
