"""`topk_rows` against a plain reference: same items, same order, ties by item index."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hybridrec.models import topk
from hybridrec.models.base import topk_rows


def reference_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row by row: sort by (score desc, index asc), keep k finite cells, pad with -1/-inf.

    A k above the row width is capped at it (the contract: at most one column per item).
    """
    n = scores.shape[0]
    k = min(k, max(scores.shape[1], 1))
    idx = np.full((n, k), -1, np.int64)
    val = np.full((n, k), -np.inf, np.float32)
    for r in range(n):
        row = [(float(s), j) for j, s in enumerate(scores[r]) if np.isfinite(s)]
        row.sort(key=lambda t: (-t[0], t[1]))
        for p, (s, j) in enumerate(row[:k]):
            idx[r, p], val[r, p] = j, s
    return idx, val


def _check(scores: np.ndarray, k: int) -> None:
    before = scores.copy()
    idx, val = topk_rows(scores, k)
    ref_idx, ref_val = reference_topk(scores, k)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(val, ref_val)
    np.testing.assert_array_equal(scores, before)  # the block is not modified


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [1, 3, 10, 40, 64])
def test_random_blocks_with_many_ties(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    # Few distinct values: almost every row ties at its k-th value.
    scores = rng.integers(0, 4, size=(30, 50)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.2] = -np.inf
    scores[3] = -np.inf  # a row nobody can answer
    scores[4, :5] = 1.0
    scores[4, 5:] = -np.inf  # fewer finite cells than k
    _check(scores, k)


def test_distinct_scores_float64_and_nan() -> None:
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((20, 300))
    scores[rng.random(scores.shape) < 0.05] = np.nan
    _check(scores, 17)


def test_identical_rows_like_popularity() -> None:
    counts = np.array([5, 3, 5, 1, 3, 5, 0, 3], np.float32)
    scores = np.tile(counts, (4, 1))
    idx, _ = topk_rows(scores, 4)
    assert idx.tolist() == [[0, 2, 5, 1]] * 4
    _check(scores, 4)


def test_k_beyond_width_is_capped_and_pads() -> None:
    scores = np.array([[0.5, -np.inf, 0.5]], np.float32)
    idx, val = topk_rows(scores, 5)
    assert idx.tolist() == [[0, 2, -1]]
    assert val[0, 2:].tolist() == [-np.inf]


def test_empty_block() -> None:
    idx, val = topk_rows(np.zeros((0, 7), np.float32), 3)
    assert idx.shape == (0, 3) and val.shape == (0, 3)


@settings(max_examples=150, deadline=None)
@given(
    scores=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 8), st.integers(1, 40)),
        elements=st.sampled_from([-np.inf, np.nan, -1.0, 0.0, 0.5, 1.0, 2.0]),
    ),
    k=st.integers(1, 45),
)
def test_matches_reference_on_tie_heavy_blocks(scores: np.ndarray, k: int) -> None:
    _check(scores, k)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 4 cells, so that small blocks take the chunked path too."""
    monkeypatch.setattr(topk, "_CHUNK", 4)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("width", [80, 83])  # with and without a partial last chunk
def test_chunked_path_matches_reference(small_chunks: None, seed: int, width: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.standard_normal((25, width)).astype(np.float32)
    scores[::3] = np.round(scores[::3])  # ties at chunk maxima: the exact path
    scores[5] = -np.inf
    scores[6, 40:] = -np.inf
    scores[7, -1] = 9.0  # best cell in the partial chunk
    for k in (1, 3, 5):
        _check(scores, k)


@settings(max_examples=100, deadline=None)
@given(
    scores=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 6), st.integers(20, 70)),
        elements=st.sampled_from([-np.inf, np.nan, -1.0, 0.0, 0.25, 0.5, 1.0, 2.0, 3.0]),
    ),
    k=st.integers(1, 4),
)
def test_chunked_path_on_tie_heavy_blocks(scores: np.ndarray, k: int) -> None:
    old = topk._CHUNK
    topk._CHUNK = 4
    try:
        _check(scores, k)
    finally:
        topk._CHUNK = old


def test_wide_rows_with_default_chunks() -> None:
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((12, 5003)).astype(np.float32)
    scores[2] = np.round(scores[2] * 2)  # heavy ties
    scores[4, 100:] = -np.inf
    _check(scores, 10)


@pytest.mark.parametrize("k", [1, 3, 10, 49, 50])
def test_single_rows_take_the_one_row_path(k: int) -> None:
    # A request asks for one user: the one-row path must answer as the block path does.
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 3, size=(25, 50)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.3] = -np.inf
    scores[2] = -np.inf
    scores[5, 1:] = -np.inf
    scores[6, ::7] = np.nan
    whole = topk_rows(scores, k)
    for r in range(scores.shape[0]):
        _check(scores[r : r + 1], k)
        idx, val = topk_rows(scores[r : r + 1], k)
        np.testing.assert_array_equal(idx[0], whole[0][r])
        np.testing.assert_array_equal(val[0], whole[1][r])


@pytest.mark.parametrize("k", [1, 10, 100, 374, 375, 2999, 3001])
def test_kth_largest_of_wide_rows(k: int) -> None:
    # The one-row threshold from chunk maxima, on rows wide enough to take that path
    # (3,001 cells: chunks of 8 and a tail of 1), with heavy ties and -inf cells.
    rng = np.random.default_rng(k)
    for row in (
        rng.integers(0, 5, size=3001).astype(np.float32),
        rng.normal(size=3001).astype(np.float32),
        np.where(rng.random(3001) < 0.9, -np.inf, rng.normal(size=3001)).astype(np.float32),
    ):
        row[-1] = row.max() + 1  # the tail cell, outside every chunk, is the largest
        kk = min(k, row.size)
        assert topk._kth_largest(row, kk) == np.sort(row)[row.size - kk]
        _check(row[None, :], k)
