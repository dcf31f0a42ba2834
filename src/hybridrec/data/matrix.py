"""Sparse user×item matrices and the weighting schemes recommenders train on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from hybridrec.data.vocab import Vocab
from hybridrec.errors import ConfigError

if TYPE_CHECKING:
    # A bundle's pickled `Weighter` imports this module: scipy comes with the first matrix.
    import polars as pl
    import scipy.sparse as sp

__all__ = ["Weighter", "Weighting", "interaction_matrix", "row_counts"]

Weighting = Literal["none", "bm25", "tfidf", "confidence"]


def interaction_matrix(
    df: pl.DataFrame,
    users: Vocab,
    items: Vocab,
    *,
    column: str = "weight",
    drop_unknown: bool = True,
    aggregate: Literal["sum", "max"] = "sum",
) -> sp.csr_matrix:
    """Build a float32 CSR matrix (users × items) from an interactions table.

    Args:
        df: Canonical interactions.
        users: Row vocabulary.
        items: Column vocabulary.
        column: Which column gives the cell values (``weight`` or ``timestamp``).
        drop_unknown: Drop rows whose user or item is not in the vocabularies (else raise).
        aggregate: How duplicate (user, item) rows combine.
    """
    u = users.index(df["user_id"].to_numpy(), missing="mask" if drop_unknown else "raise")
    i = items.index(df["item_id"].to_numpy(), missing="mask" if drop_unknown else "raise")
    values = df[column].fill_null(0).to_numpy().astype(np.float64, copy=False)
    keep = (u >= 0) & (i >= 0)
    if not keep.all():
        u, i, values = u[keep], i[keep], values[keep]
    del keep
    shape = (len(users), len(items))
    if aggregate == "max":
        # Sort so the largest value of each cell comes last, then keep the last per cell.
        order = np.lexsort((values, i, u))
        u, i, values = u[order], i[order], values[order]
        last = np.ones(u.size, dtype=bool)
        last[:-1] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
        u, i, values = u[last], i[last], values[last]
    dtype = np.float64 if column == "timestamp" else np.float32
    import scipy.sparse as sp

    m = sp.csr_matrix((values.astype(dtype), (u, i)), shape=shape)
    m.sum_duplicates()
    m.sort_indices()
    return m


class Weighter:
    """Reweights interaction matrices with statistics learned once, on the training data.

    Fold-in must weight a new user's history with the *training* item statistics (IDF,
    average history length), not with statistics of the batch at hand, so the scheme is
    fit once and then applied to any rows.

    Args:
        scheme: ``none``; ``bm25`` or ``tfidf`` (damp popular items, as in `implicit`);
            ``confidence`` for ``1 + alpha * w`` (Hu, Koren & Volinsky's implicit confidence).
        alpha: Confidence scale for ``confidence``.
        bm25_k1: BM25 saturation.
        bm25_b: BM25 length normalization.
    """

    def __init__(
        self,
        scheme: Weighting = "none",
        *,
        alpha: float = 1.0,
        bm25_k1: float = 100.0,
        bm25_b: float = 0.8,
    ) -> None:
        if scheme not in ("none", "bm25", "tfidf", "confidence"):
            raise ConfigError(f"unknown weighting {scheme!r}; valid: none, bm25, tfidf, confidence")
        self.scheme = scheme
        self.alpha = alpha
        self.bm25_k1 = bm25_k1
        self.bm25_b = bm25_b
        self.idf_: NDArray[np.float64] | None = None
        self.mean_length_ = 1.0

    def fit(self, matrix: sp.csr_matrix) -> Weighter:
        """Learn item IDF and mean row weight from the training matrix."""
        n_users = max(matrix.shape[0], 1)
        df = np.bincount(matrix.indices, minlength=matrix.shape[1]).astype(np.float64)
        # Same IDF as implicit's bm25_weight/tfidf_weight, so results match the library's.
        self.idf_ = np.log(n_users) - np.log1p(df)
        self.mean_length_ = float(np.asarray(matrix.sum(axis=1)).mean()) or 1.0
        return self

    def transform(self, matrix: sp.csr_matrix) -> sp.csr_matrix:
        """Weighted float32 copy of ``matrix`` (same sparsity pattern)."""
        import scipy.sparse as sp

        if self.scheme == "none" and matrix.dtype.kind == "f":
            # Floats round to float32 as they would through float64: skip that copy.
            plain = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
            plain.sort_indices()
            return plain
        out = sp.csr_matrix(matrix, dtype=np.float64, copy=True)
        if self.scheme == "confidence":
            out.data = 1.0 + self.alpha * out.data
        elif self.scheme in ("bm25", "tfidf"):
            if self.idf_ is None:
                raise RuntimeError("Weighter.transform before fit")
            rows = np.repeat(np.arange(out.shape[0]), np.diff(out.indptr))
            if self.scheme == "bm25":
                length = np.asarray(out.sum(axis=1)).ravel()
                norm = (1.0 - self.bm25_b) + self.bm25_b * length / self.mean_length_
                k1 = self.bm25_k1
                out.data = out.data * (k1 + 1.0) / (k1 * norm[rows] + out.data)
            else:
                out.data = np.sqrt(out.data)
            out.data = out.data * self.idf_[out.indices]
        out = out.astype(np.float32)
        out.sort_indices()
        return out

    def fit_transform(self, matrix: sp.csr_matrix) -> sp.csr_matrix:
        """`fit` then `transform` on the same matrix."""
        return self.fit(matrix).transform(matrix)


def row_counts(matrix: sp.csr_matrix) -> NDArray[np.int64]:
    """Number of stored entries per row (a user's history length)."""
    counts: NDArray[np.int64] = np.diff(matrix.indptr).astype(np.int64)
    return counts
