"""EASE: Steck's closed-form item-item linear model (embarrassingly shallow autoencoder)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import scipy.linalg as sl
import scipy.sparse as sp
from numpy.typing import NDArray
from pydantic import Field

from hybridrec.data.dataset import InteractionData
from hybridrec.data.matrix import Weighter, Weighting
from hybridrec.errors import ConfigError
from hybridrec.models.base import ModelConfig, Recommender, sparse_times_dense
from hybridrec.models.registry import register

__all__ = ["EASE", "EASEConfig"]


class EASEConfig(ModelConfig):
    """Hyperparameters of `EASE`."""

    #: L2 regularization λ added to the Gram matrix diagonal.
    regularization: float = Field(default=250.0, gt=0)
    #: Refuse catalogs larger than this: the model is a dense items × items matrix.
    max_items: int = Field(default=30_000, gt=0)
    #: Input weighting before the Gram matrix.
    weighting: Weighting = "none"
    #: Precision of the inversion: float32 is about twice as fast and ranks the same.
    dtype: Literal["float32", "float64"] = "float32"


@register
class EASE(Recommender):
    """EASE (Steck, 2019): B = I − P·diag(1/diag(P)), P = (XᵀX + λI)⁻¹, scores = X·B.

    It is exact and strong on small-to-medium catalogs, and needs no fold-in: a new user's
    scores are their history times B. Memory is items² floats (30k items ≈ 3.6 GB float32),
    hence ``max_items``.
    """

    name = "ease"
    Config = EASEConfig
    config: EASEConfig

    def _fit(self, data: InteractionData) -> None:
        n_items = data.matrix.shape[1]
        if n_items > self.config.max_items:
            raise ConfigError(
                f"EASE: {n_items} items exceed max_items={self.config.max_items} "
                "(a dense items×items model); raise max_items or filter the catalog"
            )
        self.weighter_ = Weighter(self.config.weighting).fit(data.matrix)
        dtype = np.dtype(self.config.dtype)
        x = self.weighter_.transform(data.matrix).astype(dtype)
        gram = (x.T @ x).toarray()
        gram[np.diag_indices(n_items)] += self.config.regularization
        # The Gram matrix plus λI is symmetric positive definite: Cholesky beats a general
        # inverse, and solving against I is faster than LAPACK's potri in OpenBLAS.
        factor = sl.cho_factor(gram, lower=False, overwrite_a=True, check_finite=False)
        p = sl.cho_solve(factor, np.eye(n_items, dtype=dtype), check_finite=False)
        b = p / (-np.diag(p))
        b[np.diag_indices(n_items)] = 0.0
        # Kept in the fitting precision; bundles can store it as float32 (same ranking).
        self.weights_ = b

    def _score(
        self, users: NDArray[np.int64], history: sp.csr_matrix, fold_in: NDArray[np.bool_]
    ) -> NDArray[np.float32]:
        return sparse_times_dense(self.weighter_.transform(history), self.weights_)

    def _similar_scores(self, items: NDArray[np.int64]) -> NDArray[np.float32]:
        # Column j of B says how much item j is predicted from each item: use B's rows+cols.
        b = self.weights_
        return np.asarray(b[items] + b[:, items].T, dtype=np.float32)

    def _state(self) -> dict[str, Any]:
        return {"weights": self.weights_, "weighter": self.weighter_}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.weights_ = state["weights"]
        self.weighter_ = state["weighter"]
