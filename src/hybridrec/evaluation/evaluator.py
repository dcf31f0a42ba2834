"""Offline evaluation: every model on the same held-out users, overall and by segment.

Ranking is over the full catalog of training items (never sampled negatives), with the
user's training items excluded. Held-out items the model cannot know (absent from training)
still count as relevant: a model is not rewarded for the data it could not see.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from numpy.typing import NDArray

from hybridrec.data.dataset import InteractionData
from hybridrec.evaluation.metrics import (
    METRICS,
    catalog_coverage,
    hits_matrix,
    intra_list_diversity,
    novelty,
)
from hybridrec.models.base import Recommender

__all__ = ["SEGMENTS", "Evaluator", "ModelReport"]

SEGMENTS = ("cold", "warm", "hot")


@dataclass
class ModelReport:
    """One model's evaluation.

    Attributes:
        name: Model name as shown in tables.
        metrics: ``"<metric>@<k>"`` → mean over evaluated users (plus coverage, diversity,
            novelty at each k).
        segments: Segment → metrics and ``users`` (the number of users in it).
        n_users: Users evaluated (those with at least one held-out positive).
        fit_seconds: Training time, when the caller measured it.
        eval_seconds: Time to recommend for every evaluated user and score the lists.
        params: The hyperparameters used.
        feature_importance: Feature → share of the gain, for a model that has one (the
            ranker's LightGBM), largest first.
        per_user: ``"<metric>@<k>"`` → the value of each evaluated user (in ``user_ids``
            order), when `Evaluator.evaluate` was asked to keep them (paired comparisons of
            two models on the same users); never serialized.
        user_ids: The evaluated users, in the order of ``per_user``.
    """

    name: str
    metrics: dict[str, float]
    segments: dict[str, dict[str, float]]
    n_users: int
    fit_seconds: float | None = None
    eval_seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    feature_importance: dict[str, float] = field(default_factory=dict)
    per_user: dict[str, NDArray[np.float64]] = field(
        default_factory=dict, repr=False, compare=False
    )
    user_ids: NDArray[Any] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-ready dict: metrics, timings, users and segments (NaN becomes None)."""
        out: dict[str, Any] = dict(self.metrics)
        out["users"] = self.n_users
        out["fit_seconds"] = self.fit_seconds
        out["eval_seconds"] = self.eval_seconds
        out["segments"] = self.segments
        if self.feature_importance:
            out["feature_importance"] = self.feature_importance
        clean: dict[str, Any] = _strict_json(out)
        return clean


def _strict_json(value: Any) -> Any:
    """NaN (an empty segment's mean) as None, so the result is valid strict JSON."""
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


class Evaluator:
    """Scores recommenders against held-out interactions.

    Args:
        train: The data the models were fit on (defines seen items and history lengths).
        test: Held-out canonical interactions (positives only).
        ks: Cutoffs to report; the longest list is computed once and sliced.
        cold_below: Users with fewer training interactions are "cold".
        hot_from: Users with at least this many are "hot"; the rest "warm".
        item_vectors: Rows per training item for intra-list diversity; by default genre
            one-hots when the catalog has ``categories``, else the items' interaction columns.
    """

    def __init__(
        self,
        train: InteractionData,
        test: pl.DataFrame,
        *,
        ks: Sequence[int] = (10, 20),
        cold_below: int = 5,
        hot_from: int = 20,
        item_vectors: NDArray[Any] | sp.spmatrix | None = None,
    ) -> None:
        self.train = train
        self.ks = sorted(set(int(k) for k in ks))
        pairs = test.select("user_id", "item_id").unique()
        test_users = pairs["user_id"].to_numpy()
        user_ids = np.unique(test_users)
        self.user_ids = user_ids
        rows = np.searchsorted(user_ids, test_users).astype(np.int64)
        cols = train.items.index(pairs["item_id"].to_numpy(), missing="mask")
        # Unknown held-out items still count as relevant: they cannot be hit, but divide.
        self.n_relevant = np.bincount(rows, minlength=user_ids.size).astype(np.int64)
        known = cols >= 0
        self.relevant = sp.csr_matrix(
            (np.ones(int(known.sum()), np.float32), (rows[known], cols[known])),
            shape=(user_ids.size, len(train.items)),
        )
        user_idx = train.users.index(user_ids, missing="mask")
        self.unknown_users = user_ids[user_idx < 0]
        lengths = np.where(user_idx >= 0, train.history_lengths()[np.maximum(user_idx, 0)], 0)
        self.history_lengths = lengths
        self.segment_of = np.where(
            lengths < cold_below, "cold", np.where(lengths >= hot_from, "hot", "warm")
        )
        self.item_popularity = np.bincount(train.matrix.indices, minlength=len(train.items))
        self.item_vectors = item_vectors if item_vectors is not None else self._item_vectors()

    def _item_vectors(self) -> NDArray[Any] | sp.spmatrix:
        table = self.train.items_table
        if table is not None and "categories" in table.columns:
            cats = table.select("item_id", "categories").explode("categories").drop_nulls()
            idx = self.train.items.index(cats["item_id"].to_numpy(), missing="mask")
            names, codes = np.unique(cats["categories"].to_numpy().astype(str), return_inverse=True)
            keep = idx >= 0
            if keep.any():
                return sp.csr_matrix(
                    (np.ones(int(keep.sum())), (idx[keep], codes[keep])),
                    shape=(len(self.train.items), names.size),
                )
        return self.train.matrix.T.tocsr()

    def recommend(self, model: Recommender) -> NDArray[np.int64]:
        """Top-max(k) item indices for every evaluated user (training items excluded)."""
        history: dict[Any, list[Any]] = {u: [] for u in self.unknown_users.tolist()}
        recs = model.recommend(self.user_ids, max(self.ks), exclude_seen=True, history=history)
        if recs.items == self.train.items:
            return recs.indices
        # A model over another item vocabulary (content: the whole catalog): map by id.
        # Items the evaluation does not know cannot be hits; they keep their rank slot.
        valid = recs.indices >= 0
        mapped = np.full(recs.indices.shape, -1, np.int64)
        ids = recs.items.lookup(recs.indices[valid])
        mapped[valid] = self.train.items.index(ids, missing="mask")
        return mapped

    def evaluate(
        self,
        model: Recommender,
        name: str | None = None,
        *,
        fit_seconds: float | None = None,
        keep_per_user: bool = False,
    ) -> ModelReport:
        """Recommend for every held-out user and compute every metric at every cutoff.

        With ``keep_per_user``, the report also keeps each user's values (`ModelReport.per_user`).
        """
        start = time.perf_counter()
        topk = self.recommend(model)
        hits_all = hits_matrix(topk, self.relevant)
        per_user: dict[str, NDArray[np.float64]] = {}
        overall: dict[str, float] = {}
        for k in self.ks:
            hits = hits_all[:, :k]
            for metric, fn in METRICS.items():
                per_user[f"{metric}@{k}"] = fn(hits, self.n_relevant)
            per_user[f"diversity@{k}"] = intra_list_diversity(topk[:, :k], self.item_vectors)
            per_user[f"novelty@{k}"] = novelty(
                topk[:, :k], self.item_popularity, len(self.train.users)
            )
            overall[f"coverage@{k}"] = catalog_coverage(topk[:, :k], len(self.train.items))
        for key, values in per_user.items():
            overall[key] = _mean(values)
        segments: dict[str, dict[str, float]] = {}
        for seg in SEGMENTS:
            mask = self.segment_of == seg
            segments[seg] = {"users": int(mask.sum())} | {
                key: _mean(values[mask]) for key, values in per_user.items()
            }
        elapsed = time.perf_counter() - start
        return ModelReport(
            name=name or model.name,
            metrics=dict(sorted(overall.items(), key=lambda kv: _metric_order(kv[0]))),
            segments=segments,
            n_users=int(self.user_ids.size),
            fit_seconds=fit_seconds,
            eval_seconds=elapsed,
            params=model.config.model_dump(),
            feature_importance=_importance_of(model),
            per_user=per_user if keep_per_user else {},
            user_ids=self.user_ids if keep_per_user else None,
        )


def _importance_of(model: Recommender) -> dict[str, float]:
    """A model's feature importance (the ranker's), or empty for models without one."""
    importance = getattr(model, "feature_importance", None)
    return dict(importance()) if callable(importance) else {}


def _mean(values: NDArray[np.float64]) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


_ORDER = ["precision", "recall", "map", "ndcg", "hit_rate", "mrr", "coverage", "diversity"]


def _metric_order(key: str) -> tuple[int, int, str]:
    name, _, k = key.partition("@")
    rank = _ORDER.index(name) if name in _ORDER else len(_ORDER)
    return (int(k or 0), rank, name)
