"""Item-kNN: item-item neighbourhoods from `implicit` (cosine, BM25, TF-IDF)."""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from pydantic import Field

from hybridrec.data.dataset import InteractionData
from hybridrec.models.base import ModelConfig, Proposal, Recommender, sparse_times_dense
from hybridrec.models.candidates import sparse_proposal
from hybridrec.models.footprint import SPARSE_OPS, DataShape, Footprint
from hybridrec.models.registry import register

__all__ = ["ItemKNN", "ItemKNNConfig"]


class ItemKNNConfig(ModelConfig):
    """Hyperparameters of `ItemKNN`."""

    #: Similarity: cosine of item columns, or cosine after BM25 / TF-IDF weighting.
    similarity: Literal["cosine", "bm25", "tfidf"] = "cosine"
    #: Neighbours kept per item.
    neighbors: int = Field(default=100, gt=0)
    #: BM25 saturation (``bm25`` only).
    bm25_k1: float = Field(default=1.2, gt=0)
    #: BM25 length normalization (``bm25`` only).
    bm25_b: float = Field(default=0.75, ge=0, le=1)


@register
class ItemKNN(Recommender):
    """Scores = history · S, where S keeps each item's top ``neighbors`` similarities.

    Fold-in is free: a new user's history is all it needs.
    """

    name = "itemknn"
    Config = ItemKNNConfig
    config: ItemKNNConfig

    @classmethod
    def footprint(cls, config: ModelConfig, shape: DataShape) -> Footprint:
        """The item × item co-occurrence product (about nnz × mean history pairs)."""
        assert isinstance(config, ItemKNNConfig)
        pairs = min(float(shape.items) ** 2, shape.nnz * shape.mean_history)
        return Footprint(
            bytes=pairs * 12 * 2 + shape.items * config.neighbors * 12 + shape.nnz * 24,
            seconds=pairs / SPARSE_OPS,
        )

    def _fit(self, data: InteractionData) -> None:
        from implicit.nearest_neighbours import (
            BM25Recommender,
            CosineRecommender,
            TFIDFRecommender,
        )

        c = self.config
        model: Any
        if c.similarity == "bm25":
            model = BM25Recommender(K=c.neighbors, K1=c.bm25_k1, B=c.bm25_b, num_threads=0)
        elif c.similarity == "tfidf":
            model = TFIDFRecommender(K=c.neighbors, num_threads=0)
        else:
            model = CosineRecommender(K=c.neighbors, num_threads=0)
        with warnings.catch_warnings():
            # implicit converts its own intermediate COO matrix to CSR and warns about it.
            warnings.filterwarnings("ignore", message="Method expects CSR input")
            model.fit(data.matrix, show_progress=False)
        # implicit stores S with rows = items; scores for a user are history · S.
        self.similarity_ = sp.csr_matrix(model.similarity, dtype=np.float32)

    def _score(
        self, users: NDArray[np.int64], history: sp.csr_matrix, fold_in: NDArray[np.bool_]
    ) -> NDArray[np.float32]:
        if sp.issparse(self.similarity_):
            return _dense(history @ self.similarity_)
        return sparse_times_dense(history, self.similarity_)

    def _propose(
        self,
        users: NDArray[np.int64],
        history: sp.csr_matrix,
        fold_in: NDArray[np.bool_],
        n: int,
        *,
        exclude_seen: bool,
    ) -> Proposal:
        if not sp.issparse(self.similarity_):
            return super()._propose(users, history, fold_in, n, exclude_seen=exclude_seen)
        # history · S stays sparse: candidates come from its stored cells, no dense block.
        blank = np.diff(history.indptr) == 0
        product = sp.csr_matrix(history @ self.similarity_)
        return sparse_proposal(product, history, n, exclude_seen=exclude_seen, blank=blank)

    def _similar_scores(self, items: NDArray[np.int64]) -> NDArray[np.float32]:
        return _dense(self.similarity_[items])

    def _state(self) -> dict[str, Any]:
        return {"similarity": self.similarity_}

    def _set_state(self, state: dict[str, Any]) -> None:
        # Sparse (learned here) or dense (imported from another system's similarity file).
        self.similarity_ = state["similarity"]


def _dense(block: Any) -> NDArray[np.float32]:
    return np.asarray(block.toarray() if sp.issparse(block) else block, dtype=np.float32)
