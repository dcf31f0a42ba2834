"""Tests for hybridrec.data.matrix: interaction matrices and the Weighter."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from implicit.nearest_neighbours import bm25_weight, tfidf_weight

from hybridrec.data.matrix import Weighter, interaction_matrix, row_counts
from hybridrec.data.vocab import Vocab
from hybridrec.errors import ConfigError, UnknownIdError


@pytest.fixture
def events() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": ["u2", "u1", "u1", "u2", "u1", "u3"],
            "item_id": [20, 10, 10, 30, 30, 10],
            "weight": [1.0, 2.0, 3.0, 4.0, 0.5, 1.0],
            "timestamp": [100, 300, 200, 50, None, 7],
            "event_type": ["x"] * 6,
        }
    )


@pytest.fixture
def counts() -> sp.csr_matrix:
    """A random count matrix with an empty row and an empty (last) column."""
    rng = np.random.default_rng(3)
    dense = rng.integers(0, 4, size=(40, 15)) * (rng.random((40, 15)) < 0.35)
    dense[5] = 0
    dense[:, -1] = 0
    return sp.csr_matrix(dense.astype(np.float32))


def test_interaction_matrix_sums_duplicates(events):
    users, items = Vocab(["u1", "u2", "u3"], kind="user"), Vocab([10, 20, 30])
    m = interaction_matrix(events, users, items)
    assert isinstance(m, sp.csr_matrix)
    assert m.shape == (3, 3)
    assert m.dtype == np.float32
    assert m.has_sorted_indices
    expected = np.array([[5.0, 0.0, 0.5], [0.0, 1.0, 4.0], [1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(m.toarray(), expected)
    assert m.nnz == 5  # duplicates collapsed into one stored entry
    assert row_counts(m).tolist() == [2, 2, 1]


def test_interaction_matrix_max_timestamps(events):
    users, items = Vocab(["u1", "u2", "u3"], kind="user"), Vocab([10, 20, 30])
    m = interaction_matrix(events, users, items, column="timestamp", aggregate="max")
    assert m.dtype == np.float64
    assert m[0, 0] == 300.0  # max of 300 and 200, not their sum
    assert m[1, 1] == 100.0
    assert m[1, 2] == 50.0
    assert m[2, 0] == 7.0
    assert m[0, 1] == 0.0


def test_interaction_matrix_max_weights_order_independent(events):
    users, items = Vocab(["u1", "u2", "u3"], kind="user"), Vocab([10, 20, 30])
    a = interaction_matrix(events, users, items, aggregate="max")
    b = interaction_matrix(events.reverse(), users, items, aggregate="max")
    assert a[0, 0] == 3.0
    np.testing.assert_array_equal(a.toarray(), b.toarray())


def test_interaction_matrix_large_timestamps_exact():
    df = pl.DataFrame({"user_id": [1], "item_id": [1], "timestamp": [1_700_000_123]})
    m = interaction_matrix(df, Vocab([1]), Vocab([1]), column="timestamp", aggregate="max")
    assert m[0, 0] == 1_700_000_123  # float32 would round this


def test_interaction_matrix_drops_unknown_ids(events):
    users, items = Vocab(["u1", "u2"], kind="user"), Vocab([10, 30, 99])
    m = interaction_matrix(events, users, items)
    assert m.shape == (2, 3)
    expected = np.array([[5.0, 0.5, 0.0], [0.0, 4.0, 0.0]])
    np.testing.assert_array_equal(m.toarray(), expected)
    with pytest.raises(UnknownIdError):
        interaction_matrix(events, users, items, drop_unknown=False)


# --- Weighter ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("k1", "b"), [(100.0, 0.8), (1.2, 0.75)])
def test_bm25_matches_implicit(counts, k1, b):
    ours = Weighter("bm25", bm25_k1=k1, bm25_b=b).fit_transform(counts)
    theirs = bm25_weight(counts, K1=k1, B=b)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours.toarray(), theirs.toarray(), rtol=1e-5, atol=1e-6)
    assert ours.nnz == counts.nnz


def test_tfidf_matches_implicit(counts):
    ours = Weighter("tfidf").fit_transform(counts)
    np.testing.assert_allclose(ours.toarray(), tfidf_weight(counts).toarray(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scheme", ["bm25", "tfidf"])
def test_transform_subset_uses_training_stats(counts, scheme):
    w = Weighter(scheme).fit(counts)
    full = w.transform(counts)
    rows = np.array([0, 3, 5, 17, 39])
    sub = w.transform(counts[rows])
    np.testing.assert_allclose(sub.toarray(), full[rows].toarray(), rtol=1e-6)
    fit_transform = Weighter(scheme).fit_transform(counts)
    np.testing.assert_allclose(sub.toarray(), fit_transform[rows].toarray(), rtol=1e-6)
    # Refitting on the subset alone gives different numbers: the stats matter.
    refit = Weighter(scheme).fit_transform(counts[rows])
    assert not np.allclose(refit.toarray(), sub.toarray())


def test_confidence_is_one_plus_alpha_w(counts):
    out = Weighter("confidence", alpha=40.0).fit_transform(counts)
    assert out.nnz == counts.nnz
    np.testing.assert_allclose(out.data, 1.0 + 40.0 * counts.data, rtol=1e-6)
    # No fit needed for confidence.
    np.testing.assert_allclose(
        Weighter("confidence", alpha=2.0).transform(counts).data, 1.0 + 2.0 * counts.data
    )


def test_none_is_a_float32_copy(counts):
    x = counts.astype(np.float64)
    out = Weighter("none").fit_transform(x)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out.toarray(), counts.toarray())
    out.data[:] = 0
    assert x.sum() > 0  # input untouched


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_none_rounds_as_through_float64_and_sorts_indices(dtype):
    # Unsorted column indices; values float32 cannot hold exactly.
    data = np.array([1 / 3, 2**40 + 1, 7.1, -2.5]).astype(dtype)
    x = sp.csr_matrix((data, np.array([2, 0, 1, 0]), np.array([0, 2, 3, 4])), shape=(3, 3))
    out = Weighter("none").fit_transform(x)
    expected = sp.csr_matrix(x, dtype=np.float64, copy=True).astype(np.float32)
    expected.sort_indices()
    assert out.dtype == np.float32 and out.has_sorted_indices
    np.testing.assert_array_equal(out.indices, expected.indices)
    np.testing.assert_array_equal(out.data, expected.data)
    out.data[:] = 0
    assert np.array_equal(x.data, data)  # a copy: the input is untouched


def test_transform_does_not_modify_input(counts):
    before = counts.copy()
    Weighter("bm25").fit_transform(counts)
    Weighter("confidence", alpha=5).transform(counts)
    np.testing.assert_array_equal(counts.toarray(), before.toarray())


def test_idf_and_mean_length(counts):
    w = Weighter("bm25").fit(counts)
    df = (counts.toarray() > 0).sum(axis=0)
    np.testing.assert_allclose(w.idf_, np.log(counts.shape[0]) - np.log1p(df))
    assert w.mean_length_ == pytest.approx(counts.sum() / counts.shape[0])


def test_unknown_scheme_is_config_error():
    with pytest.raises(ConfigError, match="unknown weighting 'bm42'"):
        Weighter("bm42")  # type: ignore[arg-type]


def test_transform_before_fit_raises(counts):
    with pytest.raises(RuntimeError, match="before fit"):
        Weighter("tfidf").transform(counts)


def test_row_counts():
    m = sp.csr_matrix(np.array([[1, 0, 2], [0, 0, 0], [3, 3, 3]], dtype=np.float32))
    out = row_counts(m)
    assert out.dtype == np.int64
    assert out.tolist() == [2, 0, 3]
