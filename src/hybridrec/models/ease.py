"""EASE: Steck's closed-form item-item linear model (embarrassingly shallow autoencoder).

EASE is a dense items × items matrix, so on a large catalog it models only the ``max_items``
most popular items (memory items² floats, time items³): the head, where co-occurrence
evidence is dense and EASE is strongest. The long tail gets no EASE score (it cannot be
recommended by EASE) and is left to the models that scale with it — ALS, item-kNN and
content, which the hybrid blends with EASE. This was preferred over a sparse approximation
(e.g. SANSA or a pruned Gram matrix) because it keeps the closed form exact where it is
used, needs no new dependency, and its cost is set by one number. Items nobody interacted
with (a vocabulary extended to the whole catalog, as the cold-start evaluations build) are
never modeled either: their rows and columns of B would be 0.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.linalg as sl
import scipy.sparse as sp
from numpy.typing import NDArray
from pydantic import Field
from threadpoolctl import threadpool_limits

from hybridrec.data.dataset import InteractionData
from hybridrec.data.matrix import Weighter, Weighting
from hybridrec.models.base import ModelConfig, Recommender, batch_threads, sparse_times_dense
from hybridrec.models.footprint import DENSE_FLOPS, SPARSE_OPS, DataShape, Footprint
from hybridrec.models.registry import register

__all__ = ["EASE", "EASEConfig"]


class EASEConfig(ModelConfig):
    """Hyperparameters of `EASE`."""

    #: L2 regularization λ added to the Gram matrix diagonal.
    regularization: float = Field(default=250.0, gt=0)
    #: Model at most this many items, the most popular ones (a dense items × items matrix:
    #: 10,000 items take ~1.2 GB while fitting); other items get no EASE score.
    max_items: int = Field(default=10_000, gt=0)
    #: Input weighting before the Gram matrix.
    weighting: Weighting = "none"
    #: Precision of the inversion: float32 is about twice as fast and ranks the same.
    dtype: Literal["float32", "float64"] = "float32"


@register
class EASE(Recommender):
    """EASE (Steck, 2019): B = I − P·diag(1/diag(P)), P = (XᵀX + λI)⁻¹, scores = X·B.

    It is exact and strong on small-to-medium catalogs, and needs no fold-in: a new user's
    scores are their history times B. Memory is items² floats, hence ``max_items``: beyond
    it only the most popular items are modeled (see the module docstring).
    """

    name = "ease"
    Config = EASEConfig
    ranks_whole_catalog = True
    config: EASEConfig

    @classmethod
    def footprint(cls, config: ModelConfig, shape: DataShape) -> Footprint:
        """Gram matrix, its Cholesky factor and the inverse: three n × n arrays.

        With at most half as many users as items (the Woodbury path), the users × items
        history dense and the inverse instead, and users · items² work.
        """
        assert isinstance(config, EASEConfig)
        n = float(min(shape.items, config.max_items))
        size = np.dtype(config.dtype).itemsize
        work = (4 / 3) * n**3 if 2 * shape.users > n else 2 * shape.users * n**2
        return Footprint(
            bytes=3 * n * n * size + shape.nnz * 24,
            seconds=work / DENSE_FLOPS + shape.nnz * shape.mean_history / SPARSE_OPS,
        )

    def _fit(self, data: InteractionData) -> None:
        n_all = data.matrix.shape[1]
        self.columns_: NDArray[np.int64] | None = None
        matrix = data.matrix
        counts = np.bincount(data.matrix.indices, minlength=n_all)
        interacted = int(np.count_nonzero(counts))
        if n_all > min(self.config.max_items, interacted):
            # Items nobody interacted with (a catalog-wide vocabulary) can only score 0: not
            # modeled. Beyond max_items, the most popular; ties by index (deterministic).
            order = np.lexsort((np.arange(n_all), -counts))
            keep = min(self.config.max_items, interacted)
            self.columns_ = np.sort(order[:keep]).astype(np.int64)
            matrix = data.matrix[:, self.columns_]
        n_items = matrix.shape[1]
        self.weighter_ = Weighter(self.config.weighting).fit(matrix)
        dtype = np.dtype(self.config.dtype)
        x = self.weighter_.transform(matrix).astype(dtype)
        if 2 * x.shape[0] <= n_items:
            p = _inverse_by_users(x, self.config.regularization)
        else:
            p = _inverse_by_items(x, self.config.regularization)
        p /= -np.diag(p)
        p[np.diag_indices(n_items)] = 0.0
        # LAPACK answers in column-major order; scoring reads rows (one per history item),
        # which in that order are strided reads, ~25x slower. Kept in the fitting precision;
        # bundles can store it as float32 (same ranking).
        self.weights_ = np.ascontiguousarray(p)

    def _score(
        self, users: NDArray[np.int64], history: sp.csr_matrix, fold_in: NDArray[np.bool_]
    ) -> NDArray[np.float32]:
        cols = self.columns_
        if cols is None:
            return sparse_times_dense(self.weighter_.transform(history), self.weights_)
        sub = sparse_times_dense(self.weighter_.transform(history[:, cols]), self.weights_)
        out = np.full((history.shape[0], history.shape[1]), -np.inf, np.float32)
        out[:, cols] = sub
        return out

    def _similar_scores(self, items: NDArray[np.int64]) -> NDArray[np.float32]:
        # Column j of B says how much item j is predicted from each item: use B's rows+cols.
        b = self.weights_
        cols = self.columns_
        if cols is None:
            return np.asarray(b[items] + b[:, items].T, dtype=np.float32)
        out = np.full((items.size, len(self._fitted()[1])), -np.inf, np.float32)
        pos = np.searchsorted(cols, items)
        pos = np.minimum(pos, cols.size - 1)
        modeled = cols[pos] == items
        if modeled.any():
            p = pos[modeled]
            out[np.ix_(np.flatnonzero(modeled), cols)] = b[p] + b[:, p].T
        return out

    def weight_cells(self, rows: NDArray[np.int64], cols: NDArray[np.int64]) -> NDArray[Any]:
        """B at item index pairs (``rows`` and ``cols`` broadcast, as in ``B[rows, cols]``).

        Items are the model's item indices; a pair with an item EASE does not model
        (``max_items``, or nobody interacted with it) is 0: no evidence.
        """
        rows, cols = np.broadcast_arrays(np.asarray(rows), np.asarray(cols))
        modeled = self.columns_
        if modeled is None:
            return np.asarray(self.weights_[rows, cols])
        last = max(modeled.size - 1, 0)
        r = np.minimum(np.searchsorted(modeled, rows), last)
        c = np.minimum(np.searchsorted(modeled, cols), last)
        ok = (modeled[r] == rows) & (modeled[c] == cols)
        out = np.zeros(rows.shape, dtype=self.weights_.dtype)
        out[ok] = self.weights_[r[ok], c[ok]]
        return out

    @property
    def modeled_items(self) -> int:
        """How many items EASE scores (``max_items`` most popular on a large catalog)."""
        return int(self.weights_.shape[0])

    def _state(self) -> dict[str, Any]:
        return {"weights": self.weights_, "weighter": self.weighter_, "columns": self.columns_}

    def _set_state(self, state: dict[str, Any]) -> None:
        weights = state["weights"]
        if not weights.flags.c_contiguous:
            # Written before weights were stored row-major: one copy now, fast reads after.
            weights = np.ascontiguousarray(weights)
        self.weights_ = weights
        self.weighter_ = state["weighter"]
        self.columns_ = state.get("columns")


def _inverse_by_items(x: sp.csr_matrix, lam: float) -> NDArray[Any]:
    """(XᵀX + λI)⁻¹ by Cholesky on the items × items Gram matrix: O(items³)."""
    n = x.shape[1]
    gram = (x.T @ x).toarray()
    gram[np.diag_indices(n)] += lam
    # The Gram matrix plus λI is symmetric positive definite: Cholesky beats a general
    # inverse, and solving against I is faster than LAPACK's potri in OpenBLAS. The
    # O(items³) work takes every core (`batch_threads`), whatever OPENBLAS_NUM_THREADS says
    # (1 in the Makefile, so that BLAS under implicit's threads does not contend).
    with threadpool_limits(batch_threads(), "blas"):
        factor = sl.cho_factor(gram, lower=False, overwrite_a=True, check_finite=False)
        del gram
        return np.asarray(sl.cho_solve(factor, np.eye(n, dtype=x.dtype), check_finite=False))


def _inverse_by_users(x: sp.csr_matrix, lam: float) -> NDArray[Any]:
    """(XᵀX + λI)⁻¹ through the users × users matrix, for fewer users than items.

    Woodbury: (XᵀX + λI)⁻¹ = (I − Xᵀ(XXᵀ + λI)⁻¹X) / λ, exact, in O(users³ + nnz · items)
    instead of O(items³): latest-small's 610 users × 6,298 items take about a tenth of the
    time. Taken for at most half as many users as items, where its memory (a users × items
    dense) stays under the Cholesky path's. The users × users system is solved in float64,
    so that the subtraction from I loses nothing the fitting precision keeps; its BLAS calls
    are small, and one thread does them faster than several waking up.
    """
    n = x.shape[1]
    x64 = sp.csr_matrix(x, dtype=np.float64)
    kernel = (x64 @ x64.T).toarray()
    kernel[np.diag_indices(kernel.shape[0])] += lam
    with threadpool_limits(1, "blas"):
        factor = sl.cho_factor(kernel, lower=False, overwrite_a=True, check_finite=False)
        k_inv = sl.cho_solve(factor, np.eye(kernel.shape[0]), check_finite=False)
    # Xᵀ as CSR: each row of the products accumulates in cache (scipy's CSC product
    # scatters over the whole items × items result, twice as slow).
    xt = sp.csr_matrix(x.T)
    right = np.ascontiguousarray((xt @ k_inv).T, dtype=x.dtype)  # (XXᵀ + λI)⁻¹X, float64 sums
    p = np.asarray(xt @ right)  # the items × items part Woodbury subtracts
    p *= -1.0
    p[np.diag_indices(n)] += 1.0
    p /= lam
    return p
