"""The two-stage ranker: candidates from every retriever, then LightGBM over their features.

Stage 1 takes the union of each retriever's top-N (its *components*: the pipeline's ALS,
item-kNN, EASE, content, two-tower and popularity models, plus the items most popular in
the recent window) and keeps each retriever's score, rank and per-user z-score for every
candidate. Stage 2 scores the candidates with a LightGBM model over those and the features
of `hybridrec.ranking.features`, and ranks by that score.

Training (`fit`) learns "what will this user take next": each user's latest interactions
(``label_share`` of them, by time; a random share without timestamps) are the labels, and
everything the ranker reads to make the candidates and features comes from before them —
the retrievers are refit on that feature window (copies; the attached ones stay as they
are) and `check_no_leakage` refuses features that read a user's events after the user's
cutoff. Users are processed in chunks (``chunk_size``) with a progress bar, so memory is
set by the chunk, not the data. Early stopping watches NDCG@10 on a held-out share of the
users (their label windows: the validation window). ``boosters`` such models are trained
and their scores averaged (bagging), each with its own held-out users and seed. Serving
uses the attached retrievers
and features over all the training data, i.e. the same "before → next" shift.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

import numpy as np
import polars as pl
import scipy.sparse as sp
from numpy.typing import NDArray
from pydantic import Field, field_validator

from hybridrec.data.dataset import InteractionData
from hybridrec.data.split import random_split, temporal_split
from hybridrec.errors import ConfigError, DataError, HybridrecError
from hybridrec.models.base import (
    ModelConfig,
    Proposal,
    Recommender,
    _training_rows,
    batch_threads,
)
from hybridrec.models.candidates import csr_lookup, ranked_proposal
from hybridrec.models.hybrid import (
    ComposedRecommender,
    _similar_in,
    candidate_union,
    normalize_scores,
    running_exclude_seen,
    top_of_candidates,
)
from hybridrec.models.registry import register
from hybridrec.ranking.features import FeatureTables, check_no_leakage, pair_features

__all__ = ["Ranker", "RankerConfig"]

#: The candidate source built into the ranker (items most popular in the recent window).
RECENT = "recent"
# Rows below which LightGBM predicts on one thread.
_THREADED_ROWS = 20_000


class RankerConfig(ModelConfig):
    """Hyperparameters of `Ranker`."""

    #: Retriever pipeline name → how many candidates it proposes per user. Retrievers the
    #: pipeline lacks are left out (with a line saying so), not fitted with defaults. A
    #: composed one (the hybrid) proposes its blend and gives its blended score as features.
    retrievers: dict[str, int] = Field(
        default_factory=lambda: {
            "als": 100,
            "ease": 100,
            "itemknn": 100,
            "content": 100,
            "two_tower": 100,
            "hybrid": 100,
            "popularity": 50,
        }
    )
    #: Candidates from the items most popular in the shortest recent window (0: none).
    recent: int = Field(default=50, ge=0)
    #: Recent windows of the popularity features, in days.
    windows: list[float] = Field(default_factory=lambda: [7.0, 30.0, 365.0], min_length=1)
    #: Which interactions of a user are its training labels: ``latest`` (by time; a random
    #: share when the data has no timestamps) or ``random``, a random share, as a per-user
    #: random split holds out test data. A pipeline sets it from its ``[split] method``.
    labels: Literal["latest", "random"] = "latest"
    #: Share of each user's interactions that are the training labels.
    label_share: float = Field(default=0.2, gt=0, lt=1)
    #: Label windows trained on: the latest, then the one before it (features from before
    #: each), and so on; more windows, more examples (each refits the retrievers once).
    snapshots: int = Field(default=3, ge=1)
    #: ``lambdarank`` (learning to rank) or ``binary`` (pointwise logistic loss).
    objective: Literal["lambdarank", "binary"] = "lambdarank"
    #: Boosting rounds at most (early stopping usually stops before).
    n_estimators: int = Field(default=300, ge=1)
    learning_rate: float = Field(default=0.05, gt=0)
    num_leaves: int = Field(default=15, ge=2)
    min_child_samples: int = Field(default=100, ge=1)
    feature_fraction: float = Field(default=0.8, gt=0, le=1)
    #: Rounds without a better validation NDCG@10 before training stops.
    early_stopping_rounds: int = Field(default=30, ge=1)
    #: Share of the label users held out for early stopping (with one booster).
    valid_share: float = Field(default=0.2, gt=0, lt=1)
    #: LightGBM models whose scores are averaged (bagging): each early-stops on its own
    #: seeded ``valid_share`` of the label users, trains on the rest, and has its own seed,
    #: so the average depends less on who was held out. Training costs a LightGBM fit per
    #: model (candidates and features are built once; each fit copies the rows it trains
    #: on), answering a prediction per model.
    boosters: int = Field(default=3, ge=1)
    #: Label users trained on at most (a seeded sample beyond).
    max_train_users: int = Field(default=50_000, ge=2)
    #: Negatives kept per training user (a seeded sample of its candidates; 0: all).
    negatives: int = Field(default=0, ge=0)
    #: Users per chunk of candidate and feature generation.
    chunk_size: int = Field(default=2048, ge=1)
    #: Refit the retrievers on the feature window for training (else reuse the attached
    #: ones, cheaper but their scores then know the labels).
    refit_retrievers: bool = True
    seed: int = 42
    #: LightGBM threads (0: the machine's cores, as `batch_threads`).
    num_threads: int = Field(default=0, ge=0)
    show_progress: bool = True
    #: Hyperparameters of retrievers the ranker fits itself (standalone use).
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("retrievers")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {k: v for k, v in value.items() if not isinstance(v, int) or v <= 0}
        if bad:
            raise ValueError(f"candidates per retriever must be positive integers: {bad}")
        return value


@register
class Ranker(ComposedRecommender):
    """LightGBM learning-to-rank over the union of the retrievers' candidates."""

    name = "ranker"
    Config = RankerConfig
    config: RankerConfig
    #: Retrievers the pipeline lacks are dropped from the config instead of skipping it.
    optional_components: ClassVar[bool] = True
    #: Every request has each retriever score the catalog and LightGBM rank the union:
    #: a stored ranking of each known user (`precompute_ranking`) saves all of it.
    ranks_whole_catalog: ClassVar[bool] = True

    def __init__(self, config: ModelConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.tables_: FeatureTables | None = None
        #: The LightGBM models (their text form), whose scores are averaged.
        self.model_texts_: list[str] = []
        self.feature_names_: list[str] = []
        self.importance_: dict[str, float] = {}
        self.info_: dict[str, Any] = {}
        self._local = threading.local()

    @property
    def needs_history(self) -> bool:  # type: ignore[override]
        """Personalized: a user without history gets an empty row (the chain answers)."""
        return True

    # ---- composition --------------------------------------------------------------------

    def component_names(self) -> list[str]:
        """The retrievers, in config order."""
        return list(self.config.retrievers)

    def _component_params(self, name: str) -> dict[str, Any]:
        return dict(self.config.params.get(name, {}))

    @classmethod
    def without_components(cls, params: dict[str, Any], missing: Sequence[str]) -> dict[str, Any]:
        """``params`` with the ``missing`` retrievers left out (empty: none is left)."""
        config = cls.Config(**params)
        kept = {k: v for k, v in config.retrievers.items() if k not in missing}
        if not kept:
            return {}
        return {**params, "retrievers": kept}

    @classmethod
    def params_for_split(cls, params: dict[str, Any], method: str) -> dict[str, Any]:
        """``params`` with the labels a pipeline's split implies, unless they are set.

        A per-user random split asks "which of a user's items are missing", a temporal one
        "what comes next": the ranker learns the task it is evaluated on.
        """
        if "labels" in params:
            return params
        return {**params, "labels": "random" if method == "random" else "latest"}

    # ---- training -----------------------------------------------------------------------

    def _fit(self, data: InteractionData) -> None:
        super()._fit(data)
        cfg = self.config
        start = time.perf_counter()
        events = _events_frame(data)
        frame = events
        timed = frame["timestamp"].null_count() == 0
        latest = timed and cfg.labels == "latest"
        if not latest:
            # One row per pair, so a label pair is never also a feature pair.
            frame = frame.group_by("user_id", "item_id").agg(
                pl.col("weight").sum(), pl.col("timestamp").first()
            )
        users, items = data.users, data.items
        rng = np.random.default_rng(cfg.seed)
        # The users each booster holds out, fixed across snapshots (only their latest
        # window validates); the first booster's draw is the ranker's own.
        held_of = [rng.random(len(users)) < cfg.valid_share] + [
            np.random.default_rng((cfg.seed, b)).random(len(users)) < cfg.valid_share
            for b in range(1, cfg.boosters)
        ]
        collected: list[tuple[Any, ...]] = []
        recall: dict[str, float] = {}
        n_label_users = 0
        names: list[str] = []
        current = frame
        for snapshot in range(cfg.snapshots):
            try:
                split = (
                    temporal_split(current, test=cfg.label_share)
                    if latest
                    else random_split(
                        current, valid=0.0, test=cfg.label_share, seed=cfg.seed + snapshot
                    )
                )
            except DataError:
                if snapshot == 0:
                    raise
                break
            features, labels = split.train, split.test
            feat_data = InteractionData.from_frame(
                features,
                items_table=data.items_table,
                users=users,
                items=items,
                users_table=data.users_table,
            )
            trainer = self._trainer(feat_data)
            trainer.tables_ = FeatureTables.build(
                features, users, items, items_table=data.items_table, windows=cfg.windows
            )
            check_no_leakage(features, labels, by_time=latest)
            label_rows = InteractionData.from_frame(labels, users=users, items=items).matrix
            label_users = np.flatnonzero(np.diff(label_rows.indptr) > 0)
            if label_users.size > cfg.max_train_users:
                label_users = np.sort(rng.choice(label_users, cfg.max_train_users, replace=False))
            # Only the latest window's groups may validate: they carry their user.
            tags = label_users if snapshot == 0 else np.full(label_users.size, -1)
            names = trainer.feature_names()
            rows = trainer._labelled_rows(feat_data.matrix, label_rows, label_users, tags, rng)
            collected += rows["chunks"]
            if snapshot == 0:
                recall, n_label_users = rows["recall"], int(label_users.size)
            current = features
        if not collected:
            raise DataError(
                "ranker: no user has a label among its candidates; it needs users with at "
                "least two interactions, or more candidates per retriever"
            )
        x, y, group, group_user = (np.concatenate([c[j] for c in collected]) for j in range(4))
        latest_groups = group_user >= 0
        trained = [
            _train_lightgbm(
                cfg.model_copy(update={"seed": cfg.seed + b}),
                names,
                _held_out(x, y, group, latest_groups & held[np.maximum(group_user, 0)]),
            )
            for b, held in enumerate(held_of)
        ]
        self.model_texts_ = [text for text, _, _ in trained]
        self.importance_ = _mean_importance([gain for _, gain, _ in trained])
        rounds = [n for _, _, n in trained]
        self.feature_names_ = names
        self._local = threading.local()
        self.tables_ = FeatureTables.build(
            events, users, items, items_table=data.items_table, windows=cfg.windows
        )
        self.info_ = {
            "timed": timed,
            "label_users": n_label_users,
            "rounds": rounds,
            "train_rows": int(x.shape[0]),
            "candidate_recall": recall,
            "fit_seconds": round(time.perf_counter() - start, 3),
        }

    def _trainer(self, feat_data: InteractionData) -> Ranker:
        """A ranker over the feature window: its retrievers refit there (or the attached)."""
        trainer = Ranker(self.config)
        trainer.users_, trainer.items_ = feat_data.users, feat_data.items
        trainer.user_items_ = feat_data.matrix.astype(np.float32).tocsr()
        if not self.config.refit_retrievers:
            trainer.components_ = dict(self.components_)
            return trainer
        refit: dict[str, Recommender] = {}
        with _progress(
            self.config.show_progress, "ranker: retrievers on the feature window"
        ) as bar:
            for name, model in self.components_.items():
                copy = type(model)(model.config)
                if isinstance(copy, ComposedRecommender):
                    copy.attach(refit)
                refit[name] = copy.fit(feat_data)
                bar(1, len(self.components_))
        trainer.components_ = refit
        return trainer

    def _labelled_rows(
        self,
        matrix: sp.csr_matrix,
        labels: sp.csr_matrix,
        label_users: NDArray[np.int64],
        tags: NDArray[np.int64],
        rng: np.random.Generator,
    ) -> dict[str, Any]:
        """Candidates, features and labels of the label users, chunk by chunk.

        ``chunks`` holds ``(x, y, group sizes, group tags)`` per chunk: users with a label
        among their candidates, each a group of its (kept) candidates, with its ``tags``.
        """
        cfg = self.config
        out: list[tuple[Any, ...]] = []
        hits: dict[str, float] = {}
        total = 0
        chunks = range(0, label_users.size, cfg.chunk_size)
        with _progress(cfg.show_progress, "ranker: candidates and features") as bar:
            for start in chunks:
                idx = label_users[start : start + cfg.chunk_size]
                hist = _training_rows(matrix, idx).astype(np.float32)
                cands, x, tops = self._candidate_features(
                    idx, hist, np.zeros(idx.size, bool), exclude_seen=True
                )
                truth = _training_rows(labels, idx)
                truth.sort_indices()
                y = csr_lookup(truth, cands)[1]
                total += truth.nnz
                for name, top in tops.items():
                    hits[name] = hits.get(name, 0) + int(csr_lookup(truth, top)[1].sum())
                hits["union"] = hits.get("union", 0) + int(y.sum())
                valid = cands >= 0
                if cfg.negatives:
                    score = rng.random(cands.shape)
                    score[~valid | y] = -1.0
                    keep = np.zeros_like(valid)
                    order = np.argsort(-score, axis=1)[:, : cfg.negatives]
                    np.put_along_axis(keep, order, True, axis=1)
                    valid &= keep | y
                rows = y.any(axis=1)
                if rows.any():
                    cells = valid[rows]
                    xx = x.reshape(cands.shape[0], cands.shape[1], -1)[rows][cells]
                    out.append(
                        (
                            xx,
                            y[rows][cells].astype(np.float32),
                            cells.sum(axis=1).astype(np.int64),
                            tags[start : start + cfg.chunk_size][rows],
                        )
                    )
                bar(idx.size, label_users.size)
        return {
            "recall": {k: round(v / max(total, 1), 4) for k, v in hits.items()},
            "chunks": out,
        }

    # ---- candidates and features ---------------------------------------------------------

    def feature_names(self) -> list[str]:
        """The feature columns, in order."""
        if self.tables_ is None:
            raise HybridrecError("ranker: features are not built yet")
        sources = [*self.components_, *([RECENT] if self.config.recent else [])]
        return self.tables_.names(sources)

    def _proposals(
        self,
        users: NDArray[np.int64],
        history: sp.csr_matrix,
        fold_in: NDArray[np.bool_],
        *,
        exclude_seen: bool,
    ) -> dict[str, Proposal]:
        proposals = {
            name: self._component_proposal(
                name,
                users,
                history,
                fold_in,
                n=self.config.retrievers[name],
                exclude_seen=exclude_seen,
            )
            for name in self.components_
        }
        if self.config.recent:
            assert self.tables_ is not None
            proposals[RECENT] = self._recent(history, exclude_seen=exclude_seen)
        return proposals

    def _recent(self, history: sp.csr_matrix, *, exclude_seen: bool) -> Proposal:
        """The items most popular in the shortest window (overall without times)."""
        assert self.tables_ is not None
        tables = self.tables_
        cached = getattr(self, "_recent_order", None)
        if cached is None or cached[0] is not tables:
            name = f"item_pop_{min(tables.windows):g}d"
            scores = tables.item.get(name, tables.item["item_pop"]).astype(np.float64)
            # Ties by overall popularity, then by index.
            scores = scores + tables.item["item_pop"] * 1e-6
            order = np.lexsort((np.arange(scores.size), -scores)).astype(np.int64)
            rank = np.empty_like(order)
            rank[order] = np.arange(order.size)
            cached = (tables, scores, order, rank)
            self._recent_order = cached
        _, scores, order, rank = cached
        hist = history.tocsr()
        hist.sort_indices()
        return ranked_proposal(
            scores,
            order,
            rank,
            hist,
            min(self.config.recent, order.size),
            exclude_seen=exclude_seen,
        )

    def _candidate_features(
        self,
        users: NDArray[np.int64],
        history: sp.csr_matrix,
        fold_in: NDArray[np.bool_],
        *,
        exclude_seen: bool,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32], dict[str, NDArray[np.int64]]]:
        """The candidate union per row (ascending, -1 padded), its features, each top-N."""
        assert self.tables_ is not None
        proposals = self._proposals(users, history, fold_in, exclude_seen=exclude_seen)
        union = candidate_union([p.top for p in proposals.values()])
        # Valid candidates first, still ascending; the width is the longest row's.
        order = np.argsort(union < 0, axis=1, kind="stable")
        union = np.take_along_axis(union, order, axis=1)
        width = max(int((union >= 0).sum(axis=1).max(initial=0)), 1)
        union = union[:, :width]
        valid = union >= 0
        retriever = {}
        for name, proposal in proposals.items():
            score = np.asarray(proposal.at(union), np.float32)
            ok = valid & np.isfinite(score)
            z = normalize_scores(score, ok, "zscore").astype(np.float32)
            retriever[name] = (
                np.where(ok, score, np.nan).astype(np.float32),
                _ranks(proposal.top, union),
                np.where(ok, z, np.nan).astype(np.float32),
            )
        x = pair_features(self.tables_, users, history, union, retriever)
        return union, x, {name: p.top for name, p in proposals.items()}

    # ---- answering ----------------------------------------------------------------------

    def _boosters(self) -> list[Any]:
        """This thread's LightGBM boosters (built from the stored model texts once)."""
        boosters = getattr(self._local, "boosters", None)
        if boosters is None:
            if not self.model_texts_:
                raise HybridrecError("ranker: no trained model")
            import lightgbm as lgb

            boosters = [lgb.Booster(model_str=text) for text in self.model_texts_]
            self._local.boosters = boosters
        return boosters

    def _ranked(
        self,
        users: NDArray[np.int64],
        history: sp.csr_matrix,
        fold_in: NDArray[np.bool_],
        *,
        exclude_seen: bool,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Candidates and their ranker scores (-inf for none and for users without any)."""
        cands, x, _ = self._candidate_features(users, history, fold_in, exclude_seen=exclude_seen)
        # One thread for a request's few hundred rows: OpenMP's start-up costs more than the
        # trees (0.1 ms against 0.6 ms for 500 rows on 2 cores, far worse on a busy machine).
        threads = 1 if x.shape[0] < _THREADED_ROWS else self.config.num_threads or batch_threads()
        boosters = self._boosters()
        raw = sum(b.predict(x, num_threads=threads) for b in boosters) / len(boosters)
        scores = np.asarray(raw, np.float32).reshape(cands.shape)
        scores[cands < 0] = -np.inf
        return cands, scores

    def _block_topk(
        self,
        users: NDArray[np.int64],
        history: sp.csr_matrix,
        fold_in: NDArray[np.bool_],
        k: int,
        *,
        exclude_seen: bool,
        allowed: NDArray[np.bool_] | None,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        stored = self._stored_topk(users, fold_in, k, exclude_seen=exclude_seen, allowed=allowed)
        if stored is not None:
            return stored
        cands, scores = self._ranked(users, history, fold_in, exclude_seen=exclude_seen)
        scores[np.diff(history.indptr) == 0] = -np.inf
        return top_of_candidates(cands, scores, k, allowed)

    def _score(
        self, users: NDArray[np.int64], history: sp.csr_matrix, fold_in: NDArray[np.bool_]
    ) -> NDArray[np.float32]:
        cands, scores = self._ranked(users, history, fold_in, exclude_seen=running_exclude_seen())
        out = np.full((users.size, len(self._fitted()[1])), -np.inf, np.float32)
        rows = np.repeat(np.arange(users.size), cands.shape[1]).reshape(cands.shape)
        ok = cands >= 0
        out[rows[ok], cands[ok]] = scores[ok]
        return out

    def _similar_scores(self, items: NDArray[np.int64]) -> NDArray[np.float32]:
        failed = []
        for name, model in self.components_.items():
            try:
                return np.asarray(_similar_in(self, model, items), np.float32)
            except HybridrecError as exc:
                failed.append(f"{name}: {exc}")
        raise HybridrecError(
            f"model {self.name!r}: no retriever supports similar_items ({'; '.join(failed)})"
        )

    # ---- reporting ----------------------------------------------------------------------

    def feature_importance(self, top: int | None = None) -> dict[str, float]:
        """Gain importance per feature, as shares summing to 1, largest first."""
        ranked = sorted(self.importance_.items(), key=lambda kv: (-kv[1], kv[0]))
        return dict(ranked[:top] if top else ranked)

    def candidate_recall(
        self, truth: pl.DataFrame, ns: Sequence[int] = (50, 100, 200)
    ) -> dict[str, dict[int, float]]:
        """Recall@n of each retriever's top-n and of their union, over ``truth``'s users.

        ``truth`` holds held-out interactions (``user_id``, ``item_id``) of users the model
        knows; each retriever proposes its top ``n`` (seen items excluded), and the union is
        of those same lists.
        """
        users, items, matrix = self._fitted()
        ev = truth.select("user_id", "item_id")
        u = users.index(ev["user_id"].to_numpy(), missing="mask")
        i = items.index(ev["item_id"].to_numpy(), missing="mask")
        keep = (u >= 0) & (i >= 0)
        rel = sp.csr_matrix(
            (np.ones(int(keep.sum()), np.float32), (u[keep], i[keep])), shape=matrix.shape
        )
        rel.sum_duplicates()
        rel.data[:] = 1.0
        rel.sort_indices()
        who = np.flatnonzero(np.diff(rel.indptr) > 0)
        total = max(len(truth), 1)
        out: dict[str, dict[int, float]] = {}
        for n in ns:
            hits: dict[str, int] = {}
            for start in range(0, who.size, self.config.chunk_size):
                idx = who[start : start + self.config.chunk_size]
                hist = _training_rows(matrix, idx).astype(np.float32)
                truth_rows = _training_rows(rel, idx)
                truth_rows.sort_indices()
                fold = np.zeros(idx.size, bool)
                tops = {
                    name: self._component_proposal(
                        name, idx, hist, fold, n=n, exclude_seen=True
                    ).top
                    for name in self.components_
                }
                union = candidate_union(list(tops.values()))
                for name, top in {**tops, "union": union}.items():
                    hits[name] = hits.get(name, 0) + int(csr_lookup(truth_rows, top)[1].sum())
            for name, h in hits.items():
                out.setdefault(name, {})[n] = round(h / total, 4)
        return out

    # ---- persistence --------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        tables = self.tables_
        return {
            "model_texts": list(self.model_texts_),
            "feature_names": list(self.feature_names_),
            "importance": dict(self.importance_),
            "info": dict(self.info_),
            "tables": None if tables is None else _tables_state(tables),
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        super()._set_state(state)
        texts = state.get("model_texts")
        # Bundles from before several boosters hold one model text.
        self.model_texts_ = list(texts) if texts is not None else [state["model_text"]]
        self.feature_names_ = list(state.get("feature_names") or [])
        self.importance_ = dict(state.get("importance") or {})
        self.info_ = dict(state.get("info") or {})
        raw = state.get("tables")
        self.tables_ = None if raw is None else _tables_from_state(raw)
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_local", None)
        state.pop("_recent_order", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()


def _ranks(top: NDArray[np.int64], union: NDArray[np.int64]) -> NDArray[np.float32]:
    """Each union item's position in the row's ``top`` (NaN where it is not there)."""
    n, width = top.shape
    m = int(max(top.max(initial=0), union.max(initial=0))) + 1
    keys = np.where(top >= 0, np.arange(n)[:, None] * m + top, -1).reshape(-1)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    want = (np.arange(n)[:, None] * m + np.maximum(union, 0)).reshape(-1)
    pos = np.minimum(np.searchsorted(sorted_keys, want), sorted_keys.size - 1)
    hit = (sorted_keys[pos] == want) & (union.reshape(-1) >= 0)
    out = np.full(want.size, np.nan, np.float32)
    out[hit] = (order[pos[hit]] % width).astype(np.float32)
    return out.reshape(union.shape)


def _events_frame(data: InteractionData) -> pl.DataFrame:
    """The training events: ``user_id, item_id, weight, timestamp``.

    Built from the matrix (and its timestamps) when the data carries no event table.
    """
    if data.events is not None and data.events.height:
        frame = data.events
        if "timestamp" not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.Int64).alias("timestamp"))
        if "weight" not in frame.columns:
            frame = frame.with_columns(pl.lit(1.0).alias("weight"))
        return frame.select("user_id", "item_id", "weight", "timestamp")
    coo = data.matrix.tocoo()
    times = data.timestamps
    stamps = (
        pl.Series("timestamp", np.asarray(times.tocsr()[coo.row, coo.col]).ravel(), pl.Int64)
        if times is not None
        else pl.Series("timestamp", [None] * coo.nnz, pl.Int64)
    )
    return pl.DataFrame(
        {
            "user_id": data.users.lookup(coo.row),
            "item_id": data.items.lookup(coo.col),
            "weight": coo.data.astype(np.float64),
        }
    ).with_columns(stamps)


def _held_out(
    x: NDArray[np.float32],
    y: NDArray[np.float32],
    group: NDArray[np.int64],
    held: NDArray[np.bool_],
) -> dict[str, tuple[Any, ...]]:
    """The train and valid parts of a booster whose ``held`` groups validate.

    Without such a group (few users) the last group validates instead.
    """
    if not held.any():
        if group.size < 2:
            raise DataError(
                "ranker: no validation user has a label among its candidates; it needs "
                "more users with at least two interactions"
            )
        held = np.zeros(group.size, bool)
        held[-1] = True
    if held.all():
        raise DataError("ranker: every label user validates; it needs more users")
    rows = np.repeat(held, group)
    return {
        "train": (x[~rows], y[~rows], group[~held]),
        "valid": (x[rows], y[rows], group[held]),
    }


def _mean_importance(gains: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The boosters' gain shares, averaged (still summing to 1)."""
    return {n: round(sum(g[n] for g in gains) / len(gains), 6) for n in gains[0]}


def _train_lightgbm(
    cfg: RankerConfig, names: list[str], parts: Mapping[str, Any]
) -> tuple[str, dict[str, float], int]:
    """Fit the booster on the train part, early-stopped on the valid part's NDCG@10."""
    try:
        import lightgbm as lgb
    except ImportError:
        raise ConfigError(
            "the ranker needs LightGBM: pip install 'hybridrec[rank]' (or lightgbm)"
        ) from None
    x, y, group = parts["train"]
    vx, vy, vgroup = parts["valid"]
    params = {
        "objective": cfg.objective,
        "metric": "ndcg",
        "eval_at": [10],
        "learning_rate": cfg.learning_rate,
        "num_leaves": cfg.num_leaves,
        "min_child_samples": cfg.min_child_samples,
        "feature_fraction": cfg.feature_fraction,
        "feature_fraction_seed": cfg.seed,
        "seed": cfg.seed,
        "deterministic": True,
        "force_col_wise": True,
        "num_threads": cfg.num_threads or batch_threads(),
        "verbose": -1,
    }
    categorical = [n for n in ("item_category",) if n in names]
    train = lgb.Dataset(
        x, y, group=group, feature_name=names, categorical_feature=categorical, free_raw_data=True
    )
    valid = lgb.Dataset(vx, vy, group=vgroup, reference=train)
    booster = lgb.train(
        params,
        train,
        num_boost_round=cfg.n_estimators,
        valid_sets=[valid],
        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
    )
    best = int(booster.best_iteration or booster.current_iteration())
    gain = booster.feature_importance("gain", iteration=best)
    total = float(gain.sum()) or 1.0
    importance = {n: round(float(g) / total, 6) for n, g in zip(names, gain, strict=True)}
    return booster.model_to_string(num_iteration=best), importance, best


def _tables_state(tables: FeatureTables) -> dict[str, Any]:
    cats = tables.item_cats
    return {
        "n_users": tables.n_users,
        "n_items": tables.n_items,
        "windows": list(tables.windows),
        "ref_time": tables.ref_time,
        "item": dict(tables.item),
        "item_category": tables.item_category,
        "item_cats": {
            "data": cats.data,
            "indices": cats.indices,
            "indptr": cats.indptr,
            "shape": list(cats.shape),
        },
        "user": dict(tables.user),
        "user_time": tables.user_time,
        "read_until": tables.read_until,
        "event_keys": tables.event_keys,
        "t0": tables.t0,
        "numeric": list(tables.numeric),
    }


def _tables_from_state(raw: Mapping[str, Any]) -> FeatureTables:
    cats = raw["item_cats"]
    return FeatureTables(
        n_users=int(raw["n_users"]),
        n_items=int(raw["n_items"]),
        windows=tuple(float(w) for w in raw["windows"]),
        ref_time=float(raw["ref_time"]),
        item={k: np.asarray(v) for k, v in raw["item"].items()},
        item_category=np.asarray(raw["item_category"]),
        item_cats=sp.csr_matrix(
            (np.asarray(cats["data"]), np.asarray(cats["indices"]), np.asarray(cats["indptr"])),
            shape=tuple(cats["shape"]),
        ),
        user={k: np.asarray(v) for k, v in raw["user"].items()},
        user_time=np.asarray(raw["user_time"]),
        read_until=np.asarray(raw["read_until"]),
        event_keys=None if raw["event_keys"] is None else np.asarray(raw["event_keys"]),
        t0=float(raw["t0"]),
        numeric=tuple(raw["numeric"]),
    )


@contextmanager
def _progress(show: bool, label: str) -> Iterator[Any]:
    """A rich progress bar advanced by ``bar(step, total)`` (silent when ``show`` is off)."""
    if not show:
        yield lambda step, total: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=None)

        def bar(step: int, total: int) -> None:
            progress.update(task, advance=step, total=total)

        yield bar
