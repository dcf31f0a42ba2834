"""Popularity: the baseline every comparison includes, global or over a recent window."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import polars as pl
import scipy.sparse as sp
from numpy.typing import NDArray
from pydantic import Field

from hybridrec.data.dataset import InteractionData
from hybridrec.models.base import ModelConfig, Proposal, Recommender
from hybridrec.models.candidates import ranked_proposal
from hybridrec.models.registry import register

__all__ = ["Popularity", "PopularityConfig"]


class PopularityConfig(ModelConfig):
    """Hyperparameters of `Popularity`."""

    #: ``users``: number of distinct users per item; ``weight``: sum of interaction weights.
    count: Literal["users", "weight"] = "users"
    #: Only count interactions in the last ``window_days`` before the newest one (None: all).
    window_days: float | None = Field(default=None, gt=0)


@register
class Popularity(Recommender):
    """Recommends the most popular items (globally or recently) to everyone.

    Item similarity is popularity too (it has no notion of item content), which makes it a
    sane last resort. Needs no history: unknown users with ``history`` and users with an
    empty history get the popular items.
    """

    name = "popularity"
    Config = PopularityConfig
    needs_history = False
    config: PopularityConfig

    def _fit(self, data: InteractionData) -> None:
        m = data.matrix
        window = self.config.window_days
        if window is not None and data.events is not None and data.events["timestamp"].len():
            # Window over events, not matrix cells: a cell sums repeats from any time.
            ev = data.events.drop_nulls("timestamp")
            cutoff = int(ev["timestamp"].max()) - window * 86_400.0  # type: ignore[arg-type]
            ev = ev.filter(pl.col("timestamp") >= cutoff)
            items = data.items.index(ev["item_id"].to_numpy(), missing="mask")
            users = data.users.index(ev["user_id"].to_numpy(), missing="mask")
            ok = (items >= 0) & (users >= 0)
            m = sp.csr_matrix(
                (ev["weight"].to_numpy()[ok].astype(np.float32), (users[ok], items[ok])),
                shape=m.shape,
            )
            m.sum_duplicates()
        if self.config.count == "users":
            counts = np.bincount(m.indices, minlength=m.shape[1]).astype(np.float64)
        else:
            counts = np.asarray(m.sum(axis=0)).ravel().astype(np.float64)
        self.item_scores_ = counts.astype(np.float32)

    def _score(
        self, users: NDArray[np.int64], history: sp.csr_matrix, fold_in: NDArray[np.bool_]
    ) -> NDArray[np.float32]:
        return np.broadcast_to(self.item_scores_, (users.size, self.item_scores_.size)).copy()

    def _propose(
        self,
        users: NDArray[np.int64],
        history: sp.csr_matrix,
        fold_in: NDArray[np.bool_],
        n: int,
        *,
        exclude_seen: bool,
    ) -> Proposal:
        # One ranking for everyone: each user's first unseen ranks, no dense block.
        order, rank = self.ranking()
        return ranked_proposal(
            self.item_scores_, order, rank, history, n, exclude_seen=exclude_seen
        )

    def ranking(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Items best first (ties by index) and each item's place, computed once."""
        cached = getattr(self, "_ranking_", None)
        if cached is None or cached[0] is not self.item_scores_:
            order = np.argsort(-np.asarray(self.item_scores_, np.float64), kind="stable")
            rank = np.empty_like(order)
            rank[order] = np.arange(order.size)
            cached = (self.item_scores_, order, rank)
            self._ranking_ = cached
        return cached[1], cached[2]

    def _similar_scores(self, items: NDArray[np.int64]) -> NDArray[np.float32]:
        return np.broadcast_to(self.item_scores_, (items.size, self.item_scores_.size)).copy()

    def _state(self) -> dict[str, Any]:
        return {"item_scores": self.item_scores_}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.item_scores_ = state["item_scores"]
