"""Two-tower neural retrieval (PyTorch): users and items as unit vectors, scored by dot product.

The **item tower** reads an item's features — a text embedding of its catalog row (TF-IDF,
or MiniLM sentence embeddings; optional), its categorical values (genres, categories: a
mean of token embeddings), numeric columns (year, price) and its training popularity,
standardized — through an MLP, plus an optional item-id embedding added to the MLP's
output (``residual``: the collaborative signal skips the feature layers), L2-normalized.
An item nobody interacted with has no id embedding, and for popularity the one its
features predict (a ridge regression learned on the trained items), not the log of zero,
which lay below anything the network was trained on and ranked every new item last.
The **user tower** reads the pooled (mean, or attention) learned embeddings of the ids of
the user's most recent items (``history_input="ids"``; or their item-tower vectors, or
both), how many there are (a mean hides whether it is of one item or of two hundred),
the user's attributes when the data has them (categorical and numeric, as for items) and
an optional user-id embedding; the pooled history also skips the MLP. Scores are cosine
similarities; training divides them by a configured (or learned) temperature.

Training is a sampled softmax over the batch's positives (in-batch negatives) with the
logQ correction for their popularity, optionally mixed with uniformly sampled negatives;
AdamW; early stopping on NDCG@10 (the project's metrics) of held-out interactions (10% of
the items of sampled users). Half of each training row's history items are dropped
(denoising: small data is otherwise overfit within a few epochs), a share of the rows cut
to a cold user's 0-4 items (``cold_history``: the most recent, or the user's first ones
with a target from after them) and ids dropped, so that the towers also learn to answer
from few items, from attributes alone, and for new items from their features alone.
Training is seeded (deterministic on CPU) and runs on CUDA when available.

The logQ correction makes the towers learn scores with the items' popularity taken out,
while NDCG rewards the popular items users do pick next (and a cold user's few items say
little else): scoring adds a **popularity prior**, beta x log(1 + training count) to the
logits (an item without interactions: the count its features predict), with one beta for
users whose vector was built from 0-4 items and one for the others, configured or (``auto``)
chosen after training on the early-stopping holdout (``popularity_prior``,
``cold_popularity_prior``; off by default: it pushes items without interactions down).
Scores stay in cosine units (cos + temperature x beta x log popularity); the vector
index holds each item's log popularity as one more column, so that an inner product is
the score. Item-item similarity is the plain cosine.

Inference needs no retraining: item vectors (and known users' vectors) are computed once
after `fit`; a user unknown to the model, or with history added since, gets a vector from
the user tower on request; `add_items` gives new catalog items vectors from their
features; `add_users` makes users with attributes (and no history) answerable. Torch is
imported only for that tower work: answering known users from a bundle never imports it.
The weights are stored as a safetensors ``state_dict`` (never a pickled module), beside
the feature vocabularies as plain arrays.

Like the content model, the item vocabulary is the whole catalog plus the interacted
items, so catalog items nobody interacted with are recommendable right after `fit`; the
user vocabulary is the training users plus those of the user attributes table.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Annotated, Any, Literal

import numpy as np
import polars as pl
import scipy.sparse as sp
from numpy.typing import NDArray
from pydantic import Field, field_validator

from hybridrec.data.dataset import InteractionData
from hybridrec.data.vocab import Vocab
from hybridrec.embed.text import DEFAULT_SENTENCE_MODEL, item_texts
from hybridrec.errors import DataError
from hybridrec.evaluation.metrics import hits_matrix, ndcg_at_k
from hybridrec.models.base import ModelConfig, Recommender, topk_rows
from hybridrec.models.content import _check_id_kind, _remap_columns, _with_catalog_vocab
from hybridrec.models.footprint import DENSE_FLOPS, DataShape, Footprint
from hybridrec.models.registry import register

__all__ = ["TwoTower", "TwoTowerConfig"]

log = logging.getLogger(__name__)

# Guards rebuilding a loaded model's network (requests fold users in from several threads).
_NET_LOCK = threading.Lock()
# Rows per forward pass when vectors are computed for every item or user.
_CHUNK_ROWS = 4096
#: Values of a categorical user attribute listed by `TwoTower.user_attributes`.
_LISTED_VALUES = 200
# At most this many tokens (categorical values) per item or user row.
_MAX_TOKENS = 32
# A training row whose history is cut keeps 0 to this many items (the cold-user range).
_COLD_MAX = 4
_SEP = "\x1f"
_MIN_STEPS = 16
# Initial spread of id and history embeddings (outputs are normalized: only ratios count).
_ID_INIT = 0.1
# Ridge penalty of the popularity prior of items without interactions (`_PopularityPrior`).
_PRIOR_DAMP = 1.0
# Share of a validation user's training items held out for early stopping.
_HOLDOUT_SHARE = 0.1


#: The approximate item index's recall@ANN_K of exact search, reached by calibration.
ANN_K, ANN_TARGET = 100, 0.98
#: User vectors the calibration queries with.
_CALIBRATION_USERS = 500
#: Weights of the log popularity in the logits that ``"auto"`` chooses among (ascending:
#: a tie keeps the smaller, 0 first).
_PRIOR_GRID = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5)


class TwoTowerConfig(ModelConfig):
    """Hyperparameters of `TwoTower`."""

    #: Width of each feature group's embedding (ids, categorical values, text, history).
    embedding_dim: int = Field(default=64, gt=0)
    #: Hidden layer widths of each tower's MLP.
    tower_dims: tuple[int, ...] = (256,)
    #: Width of the output (user and item) vectors.
    output_dim: int = Field(default=128, gt=0)
    #: Dropout after each hidden layer while training.
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    #: Learn an embedding per item id (items unseen in training have none).
    item_id_embedding: bool = True
    #: Learn an embedding per user id (folded-in users have none).
    user_id_embedding: bool = False
    #: Share of training rows whose id embeddings are dropped (teaches the towers to
    #: answer from features alone: new items and new users).
    id_dropout: float = Field(default=0.05, ge=0.0, le=1.0)
    #: Categorical catalog columns (None: list columns, and text columns with repeated
    #: values, e.g. genres or a brand).
    item_categorical: tuple[str, ...] | None = None
    #: Numeric catalog columns (None: numeric columns not named ``*_id``, e.g. year, price).
    item_numeric: tuple[str, ...] | None = None
    #: Add the item's training popularity (log count) as a numeric feature; items without
    #: interactions get the popularity their features predict.
    popularity_feature: bool = True
    #: Categorical user attributes (None: as for items).
    user_categorical: tuple[str, ...] | None = None
    #: Numeric user attributes (None: as for items).
    user_numeric: tuple[str, ...] | None = None
    #: Most frequent values kept per categorical column (the rest are unknown).
    max_categories: int = Field(default=1000, gt=0)
    #: ALS-initialized variant: this many ALS item factors (an implicit ALS fit on the same
    #: interactions, rows scaled to unit length) as one more item-tower input beside the
    #: text vector (0: none). Items without interactions, and items added later, get zeros
    #: there and rely on their features.
    als_factors: int = Field(default=0, ge=0)
    #: ALS-initialized variant: the ALS's iterations and L2 regularization.
    als_iterations: int = Field(default=15, gt=0)
    als_regularization: float = Field(default=1.0, ge=0)
    #: Item text embedding: ``tfidf`` (no torch model), ``sentence`` (MiniLM, offline)
    #: or ``none``; skipped when the catalog has no text.
    text_encoder: Literal["none", "tfidf", "sentence"] = "tfidf"
    #: Catalog columns that make an item's text (None: title, categories, tags, ...).
    text_fields: tuple[str, ...] | None = None
    #: TF-IDF: truncated-SVD dimension.
    text_dim: int = Field(default=64, gt=0)
    #: sentence-transformers model (``text_encoder="sentence"``).
    text_model: str = DEFAULT_SENTENCE_MODEL
    #: The user's most recent items pooled by the user tower.
    history_length: int = Field(default=200, gt=0)
    #: How history item vectors are pooled: ``mean`` or ``attention`` (a learned query).
    pooling: Literal["mean", "attention"] = "mean"
    #: What the user tower pools of each history item: a learned embedding of its id
    #: (``ids``: cheap, the collaborative signal; items without an id are left out), its
    #: item-tower vector (``vectors``: features too, the item tower runs over every
    #: history item) or ``both``.
    history_input: Literal["ids", "vectors", "both"] = "ids"
    #: Id embeddings (and the pooled history embeddings) skip the MLP and are added to
    #: its output (False: they are MLP inputs like the features).
    residual: bool = True
    #: Share of training rows whose history is cut to 0-4 items (cold users).
    history_dropout: float = Field(default=0.05, ge=0.0, le=1.0)
    #: Which 0-4 items a cut row keeps: ``recent``, the most recent ones the history item
    #: dropout left, or ``earliest``, the user's first items with a target from after
    #: them (a cold user at the start of their life: their first items, and what comes
    #: next; without timestamps, which mark no start, 0-4 random items of the window).
    cold_history: Literal["recent", "earliest"] = "recent"
    #: Share of history items dropped at random from each training row (a denoising
    #: regularizer: without it the towers overfit small data within a few epochs).
    history_item_dropout: float = Field(default=0.5, ge=0.0, lt=1.0)
    #: The user's time as a user-tower input: the time of their latest training interaction,
    #: encoded over this many evenly spaced knots between the first and the last training
    #: time (hat functions; 0: off). What a user picks depends on when they came (what was
    #: new and popular then); a user without a time (new, a visitor) is at the latest
    #: training time: what is wanted now. Off without timestamps.
    time_knots: int = Field(default=0, ge=0)
    #: Passes over the training interactions (fewer when early stopping ends training).
    epochs: int = Field(default=16, gt=0)
    #: Interactions per batch (the in-batch negatives of each other); smaller on small
    #: data, so that an epoch makes at least 16 updates.
    batch_size: int = Field(default=512, gt=1)
    #: AdamW learning rate and weight decay.
    lr: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=1e-5, ge=0)
    #: Softmax temperature of the cosine scores (initial value when learned).
    temperature: float = Field(default=0.15, gt=0, le=1.0)
    #: Learn the temperature (clamped to [0.01, 1]).
    learn_temperature: bool = False
    #: Subtract log(sampling probability) from sampled logits (logQ correction).
    logq_correction: bool = True
    #: Extra uniformly sampled negatives per batch (mixed negative sampling; 0: none).
    uniform_negatives: int = Field(default=0, ge=0)
    #: Users with one held-out interaction for early stopping (0: no early stopping).
    validation_users: int = Field(default=1000, ge=0)
    #: Epochs without a better validation NDCG@10 before training stops.
    patience: int = Field(default=3, gt=0)
    #: Epochs trained before early stopping may end training: the validation NDCG@10 can
    #: stay flat for several epochs before it climbs again (the towers start symmetric),
    #: so early stopping only trims the last epochs; the best epoch's weights are kept.
    min_epochs: int = Field(default=12, ge=1)
    #: Torch device (None: cuda when available, else cpu).
    device: str | None = None
    #: Seed of initialization, shuffling, sampling and the validation carve-out.
    seed: int = 42
    #: Torch CPU threads while training (0: torch's default). One by default: the batches
    #: are small, and on a busy machine OpenMP threads spin (10x slower on 2 shared cores).
    num_threads: int = Field(default=1, ge=0)
    #: Show a progress bar (loss and validation NDCG@10 per epoch).
    show_progress: bool = True
    #: Vector index over item vectors: ``auto`` (exact below ``index_threshold`` items),
    #: ``flat``, ``ivf`` or ``hnsw`` (FAISS).
    index: Literal["auto", "flat", "ivf", "hnsw"] = "auto"
    #: Catalog size from which ``auto`` uses the approximate (IVF) index.
    index_threshold: int = Field(default=100_000, gt=0)
    #: Approximate index: neighbours fetched per query before exclusion and filters.
    candidates: int = Field(default=500, gt=0)
    #: Write the best weights (safetensors) to this file while training (None: memory only).
    checkpoint_path: str | None = None
    #: Weight beta of the item's log popularity added at scoring time to the logits
    #: (cosine / temperature) of users with more than 4 history items: the sampled softmax
    #: with logQ correction learns popularity-free scores, while what users pick next leans
    #: to popular items. ``auto``: chosen after training among a small grid by NDCG@10 on
    #: the early-stopping holdout (0 without one); 0: off (scores are the cosines). Off by
    #: default: the holdout holds no new item, and the prior pushes new items down (on
    #: latest-small's cold-item split Recall@20 fell from 0.050 to 0.022 under ``auto``).
    popularity_prior: Annotated[float, Field(ge=0)] | Literal["auto"] = 0.0
    #: The same for users with 0-4 history items (cold users lean on popularity more);
    #: ``auto`` chooses it on the holdout users' histories cut to their first 1-4 items.
    cold_popularity_prior: Annotated[float, Field(ge=0)] | Literal["auto"] = 0.0

    @field_validator("time_knots")
    @classmethod
    def _knots(cls, value: int) -> int:
        if value == 1:
            raise ValueError("time_knots must be 0 (off) or at least 2 (got 1)")
        return value

    @field_validator("tower_dims")
    @classmethod
    def _positive_widths(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(w <= 0 for w in value):
            raise ValueError(f"tower_dims must be positive widths (got {list(value)})")
        return value


# ---- features -----------------------------------------------------------------------------


def _auto_columns(
    table: pl.DataFrame, categorical: Sequence[str] | None, numeric: Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """The categorical and numeric feature columns of a catalog or user table."""
    cols = [c for c in table.columns if c not in ("item_id", "user_id")]
    for given in (categorical, numeric):
        missing = [c for c in given or () if c not in table.columns]
        if missing:
            raise DataError(
                f"two_tower: no column {', '.join(repr(m) for m in missing)} "
                f"(found: {', '.join(table.columns)})"
            )
    if categorical is None:
        limit = max(2, table.height // 2)
        categorical = [
            c
            for c in cols
            if isinstance(table.schema[c], pl.List | pl.Array)
            or (
                table.schema[c] in (pl.String, pl.Categorical, pl.Boolean)
                and table[c].n_unique() <= limit
            )
        ]
    if numeric is None:
        numeric = [
            c for c in cols if table.schema[c].is_numeric() and not (c == "id" or c.endswith("_id"))
        ]
    return list(categorical), list(numeric)


def _token_rows(table: pl.DataFrame, columns: Sequence[str]) -> tuple[NDArray[Any], NDArray[Any]]:
    """(row, token) pairs of the categorical columns, tokens as ``column<SEP>value``."""
    rows: list[NDArray[Any]] = []
    tokens: list[NDArray[Any]] = []
    for col in columns:
        values = table.select(pl.int_range(pl.len()).alias("_row"), pl.col(col))
        if isinstance(table.schema[col], pl.List | pl.Array):
            values = values.explode(col)
        values = values.drop_nulls(col)
        rows.append(values["_row"].to_numpy())
        tokens.append(np.char.add(f"{col}{_SEP}", values[col].cast(pl.String).to_numpy()))
    if not rows:
        return np.empty(0, np.int64), np.empty(0, str)
    return np.concatenate(rows).astype(np.int64), np.concatenate(tokens).astype(str)


def _token_vocab(tokens: NDArray[Any], columns: Sequence[str], cap: int) -> NDArray[Any]:
    """The ``cap`` most frequent values of each column, sorted (a `Vocab`'s order)."""
    keep: list[NDArray[Any]] = []
    if tokens.size == 0:
        return np.empty(0, str)
    names, counts = np.unique(tokens, return_counts=True)
    for col in columns:
        own = np.char.startswith(names, f"{col}{_SEP}")
        idx = np.flatnonzero(own)
        order = np.lexsort((idx, -counts[idx]))
        keep.append(names[idx[order[:cap]]])
    return np.sort(np.concatenate(keep)) if keep else np.empty(0, str)


def _token_matrix(
    table: pl.DataFrame, columns: Sequence[str], vocab: NDArray[Any]
) -> NDArray[np.int64]:
    """Per table row, its token codes + 1 (0 pads), at most `_MAX_TOKENS` per row."""
    rows, tokens = _token_rows(table, columns)
    out = np.zeros((table.height, 1), np.int64)
    if vocab.size == 0 or rows.size == 0:
        return out
    codes = Vocab(vocab, kind="feature").index(tokens, missing="mask")
    ok = codes >= 0
    rows, codes = rows[ok], codes[ok]
    order = np.lexsort((codes, rows))
    rows, codes = rows[order], codes[order]
    starts = np.searchsorted(rows, rows, side="left")
    slot = np.arange(rows.size) - starts
    keep = slot < _MAX_TOKENS
    width = int(slot[keep].max()) + 1 if keep.any() else 1
    out = np.zeros((table.height, width), np.int64)
    out[rows[keep], slot[keep]] = codes[keep] + 1
    return out


def _numeric_matrix(table: pl.DataFrame, columns: Sequence[str]) -> NDArray[np.float64]:
    if not columns:
        return np.zeros((table.height, 0))
    return np.column_stack(
        [table[c].cast(pl.Float64, strict=False).fill_nan(None).to_numpy() for c in columns]
    ).astype(np.float64)


def _standardize(
    x: NDArray[np.float64], stats: tuple[NDArray[Any], NDArray[Any]] | None
) -> tuple[NDArray[np.float32], tuple[NDArray[Any], NDArray[Any]]]:
    """Columns scaled to mean 0, std 1 (``stats`` learned when None); missing values → 0."""
    if stats is None:
        finite = [c[np.isfinite(c)] for c in x.T]
        mean = np.asarray([c.mean() if c.size else 0.0 for c in finite])
        std = np.asarray([c.std() if c.size else 1.0 for c in finite])
        stats = (mean.astype(np.float64), np.where(std > 0, std, 1.0).astype(np.float64))
    z = (x - stats[0]) / stats[1]
    return np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32), stats


def _aligned(rows: NDArray[np.int64], n: int, values: NDArray[Any]) -> NDArray[Any]:
    """``values`` (one per table row) placed at vocabulary rows ``rows``; zeros elsewhere."""
    out = np.zeros((n, *values.shape[1:]), values.dtype)
    out[rows] = values
    return out


class _Side:
    """Feature vocabularies of one side (items or users) and their encoding of a table."""

    def __init__(self, categorical: list[str], numeric: list[str], vocab: NDArray[Any]):
        self.categorical = categorical
        self.numeric = numeric
        self.vocab = vocab
        self.stats: tuple[NDArray[Any], NDArray[Any]] | None = None

    @classmethod
    def learn(
        cls,
        table: pl.DataFrame | None,
        categorical: Sequence[str] | None,
        numeric: Sequence[str] | None,
        cap: int,
    ) -> _Side:
        if table is None:
            return cls([], [], np.empty(0, str))
        cat, num = _auto_columns(table, categorical, numeric)
        _, tokens = _token_rows(table, cat)
        return cls(cat, num, _token_vocab(tokens, cat, cap))

    def encode(
        self, table: pl.DataFrame | None, rows: NDArray[np.int64], n: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Token codes and standardized numerics of vocabulary rows ``rows`` (table order)."""
        if table is None:
            return np.zeros((n, 1), np.int64), np.zeros((n, 0), np.float32)
        tokens = _token_matrix(table, self.categorical, self.vocab)
        nums, self.stats = _standardize(_numeric_matrix(table, self.numeric), self.stats)
        return _aligned(rows, n, tokens), _aligned(rows, n, nums)

    def state(self) -> dict[str, Any]:
        return {
            "categorical": self.categorical,
            "numeric": self.numeric,
            "vocab": self.vocab,
            "stats": None if self.stats is None else list(self.stats),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _Side:
        side = cls(list(state["categorical"]), list(state["numeric"]), state["vocab"])
        stats = state["stats"]
        side.stats = None if stats is None else (stats[0], stats[1])
        return side


class _PopularityPrior:
    """A ridge regression of the standardized log popularity on an item's features.

    Fit on the trained items; it gives an item nobody interacted with the popularity of
    trained items with features like its own, clipped to the trained range (the network
    never saw a popularity outside it). Features: the categorical values (one-hot), the
    numeric columns, the text vector and an intercept, as one sparse matrix; solved by
    LSQR (deterministic, and cheap for thousands of categorical values).
    """

    def __init__(self, weights: NDArray[np.float64], width: int, low: float, high: float):
        self.weights = weights
        # Columns of the one-hot block: the categorical codes + 1 (0 pads, unused).
        self.width = width
        self.low = low
        self.high = high

    @staticmethod
    def _design(
        tokens: NDArray[np.int64],
        numeric: NDArray[np.float32],
        text: NDArray[np.float32],
        width: int,
    ) -> sp.csr_matrix:
        rows = np.repeat(np.arange(tokens.shape[0]), tokens.shape[1])
        codes = tokens.ravel()
        keep = (codes > 0) & (codes < width)
        onehot = sp.csr_matrix(
            (np.ones(int(keep.sum())), (rows[keep], codes[keep])), shape=(tokens.shape[0], width)
        )
        dense = np.hstack([numeric, text, np.ones((tokens.shape[0], 1))]).astype(np.float64)
        return sp.hstack([onehot, sp.csr_matrix(dense)], format="csr")

    @classmethod
    def fit(
        cls,
        tokens: NDArray[np.int64],
        numeric: NDArray[np.float32],
        text: NDArray[np.float32],
        target: NDArray[Any],
    ) -> _PopularityPrior:
        from scipy.sparse.linalg import lsqr

        width = int(tokens.max()) + 1 if tokens.size else 1
        x = cls._design(tokens, numeric, text, width)
        y = np.asarray(target, np.float64)
        weights = lsqr(x, y, damp=_PRIOR_DAMP)[0]
        return cls(weights, width, float(y.min()), float(y.max()))

    def predict(
        self, tokens: NDArray[np.int64], numeric: NDArray[np.float32], text: NDArray[np.float32]
    ) -> NDArray[np.float64]:
        x = self._design(tokens, numeric, text, self.width)
        return np.asarray(np.clip(x @ self.weights, self.low, self.high), np.float64)

    def state(self) -> dict[str, Any]:
        return {"weights": self.weights, "width": self.width, "low": self.low, "high": self.high}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _PopularityPrior:
        return cls(
            np.asarray(state["weights"]),
            int(state["width"]),
            float(state["low"]),
            float(state["high"]),
        )


def _pad_width(a: NDArray[np.int64], width: int) -> NDArray[np.int64]:
    if a.shape[1] >= width:
        return a
    return np.pad(a, ((0, 0), (0, width - a.shape[1])))


def _stack_rows(
    old: NDArray[Any], new: NDArray[Any], old_pos: NDArray[np.int64], new_pos: NDArray[np.int64]
) -> NDArray[Any]:
    """Rows of ``old`` and ``new`` placed at their positions in a grown vocabulary."""
    if old.ndim == 2 and old.dtype.kind == "i":
        width = max(old.shape[1], new.shape[1])
        old, new = _pad_width(old, width), _pad_width(new, width)
    out = np.zeros((old.shape[0] + new.shape[0], *old.shape[1:]), old.dtype)
    out[old_pos] = old
    out[new_pos] = new
    return out


# ---- the network (torch, imported on first use) ------------------------------------------


@cache
def _torch() -> Any:
    """The torch module and the network classes, built on first use (torch imported here)."""
    import torch
    from torch import nn
    from torch.nn import functional

    class Tower(nn.Module):
        """Id embedding, token bag, numerics and dense inputs → MLP → unit vector.

        With ``arch["residual"]`` the id embedding (and a ``direct`` input, the pooled
        history embeddings of the user tower) skip the MLP and are added to its output:
        the collaborative signal is not squeezed through the feature layers, and a row
        whose id is dropped (a new item or user) is answered by the features alone.
        """

        def __init__(
            self,
            n_ids: int,
            n_tokens: int,
            n_numeric: int,
            dense: int,
            arch: Any,
            *,
            direct: int = 0,
        ):
            super().__init__()
            d, out = int(arch["embedding_dim"]), int(arch["output_dim"])
            self.residual = bool(arch.get("residual", False))
            self.ids = (
                nn.Embedding(n_ids + 1, out if self.residual else d, padding_idx=0)
                if n_ids
                else None
            )
            if self.ids is not None and self.residual:
                nn.init.normal_(self.ids.weight, std=_ID_INIT)
                with torch.no_grad():
                    self.ids.weight[0].zero_()
            self.tokens = nn.Embedding(n_tokens + 1, d, padding_idx=0) if n_tokens else None
            self.dense = nn.Linear(dense, d) if dense else None
            blocks = (self.tokens is not None) + bool(dense)
            width = d * (blocks + (self.ids is not None and not self.residual)) + direct
            layers: list[Any] = []
            last = max(width + n_numeric, 1)
            for h in arch["tower_dims"]:
                layers += [nn.Linear(last, int(h)), nn.ReLU(), nn.Dropout(float(arch["dropout"]))]
                last = int(h)
            layers.append(nn.Linear(last, out))
            if self.residual:
                # The feature branch starts small beside the direct path (a residual branch).
                with torch.no_grad():
                    layers[-1].weight.mul_(0.1)
                    layers[-1].bias.zero_()
            self.mlp = nn.Sequential(*layers)

        def forward(
            self, ids: Any, tokens: Any, numeric: Any, dense: Any, direct: Any = None
        ) -> Any:
            parts = []
            if self.ids is not None and not self.residual:
                parts.append(self.ids(ids))
            if self.tokens is not None:
                count = (tokens > 0).sum(dim=1, keepdim=True).clamp(min=1)
                parts.append(self.tokens(tokens).sum(dim=1) / count)
            if self.dense is not None:
                parts.append(self.dense(dense))
            if direct is not None:
                parts.append(direct)
            if numeric.shape[1]:
                parts.append(numeric)
            x = torch.cat(parts, dim=1) if parts else ids.new_zeros((ids.shape[0], 1)).float()
            y = self.mlp(x)
            if self.residual:
                if self.ids is not None:
                    y = y + self.ids(ids)
                if direct is not None:
                    y = y + direct
            return functional.normalize(y, dim=1)

    class Net(nn.Module):
        """Both towers, the history pooling and the temperature."""

        def __init__(self, arch: Any):
            super().__init__()
            a = arch
            out = int(a["output_dim"])
            source = a.get("history_input", "vectors")
            self.item = Tower(
                a["n_item_ids"], a["n_item_tokens"], a["n_item_numeric"], a["text"], a
            )
            # History items as learned embeddings of their ids ("ids"), as item-tower
            # vectors ("vectors"), or both.
            self.history = (
                nn.Embedding(a["n_item_ids"] + 1, out, padding_idx=0)
                if source in ("ids", "both") and a["n_item_ids"]
                else None
            )
            if self.history is not None:
                nn.init.normal_(self.history.weight, std=_ID_INIT)
                with torch.no_grad():
                    self.history.weight[0].zero_()
            self.user = Tower(
                a["n_user_ids"],
                a["n_user_tokens"],
                a["n_user_numeric"],
                out if source in ("vectors", "both") else 0,
                a,
                direct=out if self.history is not None else 0,
            )
            self.query = nn.Parameter(torch.zeros(out)) if a["pooling"] == "attention" else None
            self.log_tau = nn.Parameter(
                torch.tensor(math.log(float(a["temperature"]))),
                requires_grad=bool(a["learn_temperature"]),
            )

        def pool(self, vectors: Any, mask: Any) -> Any:
            """History vectors (B × L × d, mask B × L) → one vector per row (zeros if none)."""
            weights = mask.float()
            if self.query is not None:
                logits = (vectors @ self.query) / math.sqrt(vectors.shape[-1])
                logits = logits.masked_fill(~mask, -1e9)
                weights = torch.softmax(logits, dim=1) * weights
            total = weights.sum(dim=1, keepdim=True).clamp(min=1e-9)
            return (vectors * weights.unsqueeze(-1)).sum(dim=1) / total

        def pool_ids(self, codes: Any) -> Any:
            """History item codes (B × L, 0: none or no id) → pooled history embeddings."""
            assert self.history is not None
            return self.pool(self.history(codes), codes > 0)

        def tau(self) -> Any:
            return self.log_tau.exp().clamp(0.01, 1.0)

    return torch, Net


def _weights_bytes(net: Any) -> NDArray[np.uint8]:
    """The network's ``state_dict`` as safetensors bytes (a uint8 array for bundles)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    return np.frombuffer(save(state), dtype=np.uint8).copy()


def _load_weights(net: Any, blob: NDArray[np.uint8]) -> None:
    from safetensors.torch import load

    net.load_state_dict(load(np.asarray(blob, dtype=np.uint8).tobytes()))


# ---- the model ----------------------------------------------------------------------------


@register
class TwoTower(Recommender):
    """Two-tower retrieval: user tower · item tower, both L2-normalized (see the module doc).

    Attributes (after `fit`):
        item_vectors_: Unit item vectors (n_items × output_dim, float32).
        user_vectors_: Unit vectors of the known users from their stored history.
        train_log_: Per epoch: loss, validation NDCG@10 (None without validation), seconds.
        best_epoch_: The epoch whose weights were kept (1-based).
        log_pop_: Per item, log(1 + training count); for an item without interactions the
            one its features predict (`_PopularityPrior`).
        popularity_prior_, cold_popularity_prior_: The weights beta of ``log_pop_`` in the
            logits of users with more than 4 and with 0-4 history items (chosen on the
            holdout under ``"auto"``).
        temperature_: The temperature the logits divide the cosines by.
        user_time_: Per user, the latest training time in [0, 1] (``time_knots``; None off).
    """

    name = "two_tower"
    Config = TwoTowerConfig
    config: TwoTowerConfig
    represents_users = True

    def __init__(self, config: ModelConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.net_: Any = None
        self.cf_dim_ = 0
        self.index_: Any = None
        self.train_log_: list[dict[str, Any]] = []
        self.best_epoch_ = 0
        self.log_pop_ = np.zeros(0, np.float32)
        self.popularity_prior_ = 0.0
        self.cold_popularity_prior_ = 0.0
        self.temperature_ = 1.0
        self.user_time_: NDArray[np.float32] | None = None

    @classmethod
    def footprint(cls, config: ModelConfig, shape: DataShape) -> Footprint:
        """Feature and vector arrays, the network, and epochs x interactions of tower work."""
        assert isinstance(config, TwoTowerConfig)
        d = config.embedding_dim + config.output_dim + sum(config.tower_dims)
        rows = shape.users + shape.catalog
        # Item-tower passes per row: the positive (and, pooling vectors, the history items).
        passes = 3 + (config.history_length / 4 if config.history_input != "ids" else 0)
        flops = config.epochs * shape.nnz * passes * 6 * d * d
        return Footprint(
            bytes=rows * (d + config.text_dim + config.history_length) * 4 * 4 + shape.nnz * 48,
            seconds=flops / DENSE_FLOPS * 4,
        )

    # ---- fitting --------------------------------------------------------------------------

    def fit(self, data: InteractionData) -> TwoTower:
        """Learn both towers from the interactions (and catalog, user attributes); ``self``."""
        users_table = data.users_table
        if data.items_table is not None:
            data = _with_catalog_vocab(data)
        super().fit(_with_user_vocab(data, users_table))
        return self

    def _fit(self, data: InteractionData) -> None:
        c = self.config
        torch, net_class = _torch()
        items, users = data.items, data.users
        n_items, n_users = len(items), len(users)
        counts = np.bincount(data.matrix.indices, minlength=n_items)
        cf = self._als_item_inputs(data) if c.als_factors else None
        self._learn_item_features(data.items_table, counts, cf)
        self.user_side_ = _Side.learn(
            data.users_table, c.user_categorical, c.user_numeric, c.max_categories
        )
        self.user_tokens_, self.user_numeric_ = self._encode_users(data.users_table, users)
        self.user_time_ = _user_times(data) if c.time_knots else None
        knots = c.time_knots if self.user_time_ is not None else 0  # off without times
        trained = np.flatnonzero(np.diff(data.matrix.indptr) > 0)
        self.user_codes_ = np.zeros(n_users, np.int64)
        if c.user_id_embedding:
            self.user_codes_[trained] = np.arange(1, trained.size + 1)
        self.arch_: dict[str, Any] = {
            "embedding_dim": c.embedding_dim,
            "tower_dims": list(c.tower_dims),
            "output_dim": c.output_dim,
            "dropout": c.dropout,
            "pooling": c.pooling,
            "residual": c.residual,
            "history_input": c.history_input,
            "temperature": c.temperature,
            "learn_temperature": c.learn_temperature,
            "n_item_ids": int(self.item_codes_.max()),
            "n_item_tokens": int(self.item_side_.vocab.size),
            "n_item_numeric": int(self.item_numeric_.shape[1]),
            "text": int(self.item_text_.shape[1]),
            "n_user_ids": int(self.user_codes_.max()),
            "n_user_tokens": int(self.user_side_.vocab.size),
            # More numeric inputs: the history length (`_length_column`), the time knots.
            "n_user_numeric": int(self.user_numeric_.shape[1]) + 1 + knots,
            "length_input": True,
            "time_knots": knots,
        }
        order = _recency_order(data)
        first = _earliest_order(data, order)
        rng = np.random.default_rng(c.seed)
        matrix = sp.csr_matrix(data.matrix)
        held = _holdout(matrix, c.validation_users, rng)
        device = c.device or ("cuda" if torch.cuda.is_available() else "cpu")
        threads = torch.get_num_threads()
        if c.num_threads:
            torch.set_num_threads(c.num_threads)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(c.seed)
                net = net_class(self.arch_).to(device)
                self._train(
                    net, matrix, order=order, first=first, held=held, rng=rng, device=device
                )
        finally:
            torch.set_num_threads(threads)
        self.net_ = net.cpu().eval()
        self.weights_ = _weights_bytes(self.net_)
        self.recent_indptr_, self.recent_items_ = _truncate(order, c.history_length)
        self.item_vectors_ = self._item_vectors(np.arange(n_items))
        self.user_vectors_ = self._known_user_vectors(np.arange(n_users))
        self._build_index()

    def _als_item_inputs(self, data: InteractionData) -> NDArray[np.float32]:
        """Unit-length ALS item factors of the training items (zeros for items nobody had)."""
        from hybridrec.models.als import ALS

        c = self.config
        als = ALS(
            factors=c.als_factors,
            iterations=c.als_iterations,
            regularization=c.als_regularization,
            random_state=c.seed,
        ).fit(data)
        factors = np.asarray(als.item_factors_, np.float32)
        norms = np.linalg.norm(factors, axis=1, keepdims=True)
        return np.where(norms > 0, factors / np.where(norms > 0, norms, 1.0), 0.0).astype(
            np.float32
        )

    def _learn_item_features(
        self,
        table: pl.DataFrame | None,
        counts: NDArray[Any],
        cf: NDArray[np.float32] | None = None,
    ) -> None:
        """Item feature vocabularies and arrays; ``cf``: ALS factors appended to the text."""
        c = self.config
        items = self._fitted()[1]
        self.item_side_ = _Side.learn(table, c.item_categorical, c.item_numeric, c.max_categories)
        self.text_state_: dict[str, Any] | None = None
        self.text_kind_ = "none"
        texts = self._texts(table)
        if texts is not None and c.text_encoder == "tfidf":
            from hybridrec.embed.text import TfidfTextEncoder

            try:
                enc = TfidfTextEncoder(dim=c.text_dim, seed=c.seed).fit([t for t in texts if t])
                self.text_state_ = enc.get_state()
                self.text_kind_ = "tfidf"
            except DataError:
                log.info("two_tower: no usable words in the item texts; no text features")
        elif texts is not None and c.text_encoder == "sentence":
            self.text_kind_ = "sentence"
        self.pop_stats_: tuple[NDArray[Any], NDArray[Any]] | None = None
        self.pop_prior_: _PopularityPrior | None = None
        tokens, numeric, text, pop = self._encode_items(table, items, counts)
        self.log_pop_ = self._log_pop(pop)
        self.item_tokens_: NDArray[np.int64] = tokens
        self.item_numeric_: NDArray[np.float32] = numeric
        # The ALS-initialized variant's factors follow the text vector (`cf_dim_` columns).
        self.cf_dim_ = 0 if cf is None else int(cf.shape[1])
        self.item_text_: NDArray[np.float32] = text if cf is None else np.hstack([text, cf])
        self.item_codes_: NDArray[np.int64] = np.zeros(len(items), np.int64)
        if c.item_id_embedding:
            seen = np.flatnonzero(counts > 0)
            self.item_codes_[seen] = np.arange(1, seen.size + 1)

    def _texts(self, table: pl.DataFrame | None) -> list[str] | None:
        """The catalog rows' texts, or None when there is no text to embed."""
        if table is None or self.config.text_encoder == "none":
            return None
        try:
            texts = item_texts(table, self.config.text_fields)
        except DataError:
            if self.config.text_fields is not None:
                raise
            return None
        return texts if any(texts) else None

    def _encode_text(self, texts: list[str]) -> NDArray[np.float32]:
        c = self.config
        if self.text_kind_ == "tfidf" and self.text_state_ is not None:
            from hybridrec.embed.text import TfidfTextEncoder

            return TfidfTextEncoder.from_state(self.text_state_).encode(texts)
        from hybridrec.embed.text import SentenceTextEncoder

        return SentenceTextEncoder(c.text_model, show_progress=c.show_progress).encode(texts)

    def _encode_items(
        self, table: pl.DataFrame | None, items: Vocab, counts: NDArray[Any]
    ) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
        """Token codes, numerics (popularity last), text vectors and popularity of ``items``.

        The popularity (`_popularity`, one column) is computed without the popularity
        feature too: the popularity prior of the scores reads it.
        """
        n = len(items)
        rows = np.empty(0, np.int64)
        if table is not None:
            _check_id_kind(table, items)
            rows = items.index(table["item_id"].to_numpy(), missing="mask")
            table = table.filter(pl.Series(rows >= 0))
            rows = rows[rows >= 0]
        tokens, numeric = self.item_side_.encode(table, rows, n)
        text = np.zeros((n, 0), np.float32)
        if self.text_kind_ != "none" and table is not None:
            texts = self._texts(table) or [""] * table.height
            text = _aligned(rows, n, self._encode_text(texts))
        pop = self._popularity(counts, tokens, numeric, text)
        if self.config.popularity_feature:
            numeric = np.hstack([numeric, pop])
        return tokens, numeric, text, pop

    def _log_pop(self, pop: NDArray[np.float32]) -> NDArray[np.float32]:
        """The standardized popularity column back on its log(1 + count) scale."""
        if self.pop_stats_ is None:
            return np.zeros(pop.shape[0], np.float32)
        mean, std = self.pop_stats_
        return np.asarray(pop[:, 0] * std[0] + mean[0], np.float32)

    def _predicted_log_pop(self, idx: NDArray[np.int64]) -> NDArray[np.float32]:
        """The log popularity the features of items ``idx`` predict (as for new items)."""
        if self.pop_prior_ is None:
            return self._log_pop(np.zeros((idx.size, 1), np.float32))
        numeric = self.item_numeric_[idx]
        if self.config.popularity_feature:
            numeric = numeric[:, :-1]
        text = self.item_text_[idx, : self.item_text_.shape[1] - self.cf_dim_]
        z = self.pop_prior_.predict(self.item_tokens_[idx], numeric, text)
        return self._log_pop(z[:, None].astype(np.float32))

    def _popularity(
        self,
        counts: NDArray[Any],
        tokens: NDArray[np.int64],
        numeric: NDArray[np.float32],
        text: NDArray[np.float32],
    ) -> NDArray[np.float32]:
        """The popularity input (one column): standardized log interaction counts.

        An item without interactions (a new one) gets the popularity its features predict
        (`_PopularityPrior`, learned on the trained items) instead of the log of 0: that
        lies below every popularity the network was trained on, and ranked every new item
        last whatever its features.
        """
        log_counts = np.log1p(np.asarray(counts, np.float64))[:, None]
        seen = log_counts[:, 0] > 0
        if self.pop_stats_ is None:
            _, self.pop_stats_ = _standardize(log_counts[seen], None)
        z, _ = _standardize(log_counts, self.pop_stats_)
        if self.pop_prior_ is None and seen.any():
            self.pop_prior_ = _PopularityPrior.fit(
                tokens[seen], numeric[seen], text[seen], z[seen, 0]
            )
        if self.pop_prior_ is not None and not seen.all():
            new = ~seen
            z[new, 0] = self.pop_prior_.predict(tokens[new], numeric[new], text[new])
        else:
            # Without a prior (a bundle from before it existed): the trained items' mean.
            z[~seen] = 0.0
        return z

    def _encode_users(
        self, table: pl.DataFrame | None, users: Vocab
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        rows = np.empty(0, np.int64)
        if table is not None:
            rows = users.index(table["user_id"].to_numpy(), missing="mask")
            table = table.filter(pl.Series(rows >= 0))
            rows = rows[rows >= 0]
        return self.user_side_.encode(table, rows, len(users))

    # ---- training -------------------------------------------------------------------------

    def _item_tensors(self, device: str) -> dict[str, Any]:
        """The item feature arrays as tensors on ``device`` (copies: bundles are read-only)."""
        torch = _torch()[0]
        arrays = {
            "ids": (self.item_codes_, torch.long),
            "tokens": (self.item_tokens_, torch.long),
            "numeric": (self.item_numeric_, torch.float32),
            "text": (self.item_text_, torch.float32),
        }
        return {
            key: torch.tensor(np.asarray(a), dtype=kind, device=device)
            for key, (a, kind) in arrays.items()
        }

    def _train(
        self,
        net: Any,
        matrix: sp.csr_matrix,
        *,
        order: tuple[NDArray[np.int64], NDArray[np.int64]],
        first: tuple[NDArray[np.int64], NDArray[np.int64]] | None,
        held: tuple[NDArray[np.int64], NDArray[np.int64]],
        rng: np.random.Generator,
        device: str,
    ) -> None:
        """Train ``net`` in place.

        ``order``: each user's items most recent first; ``first``: earliest first (None
        without timestamps).
        """
        c = self.config
        torch = _torch()[0]
        f = self._item_tensors(device)
        val_users, val_items = held
        train = matrix.copy()
        if val_users.size:
            train[val_users, val_items] = 0
            train.eliminate_zeros()
        train_order = _drop_cells(order, val_users, val_items)
        train_first = None if first is None else _drop_cells(first, val_users, val_items)
        users = np.repeat(np.arange(train.shape[0]), np.diff(train.indptr))
        items = train.indices.astype(np.int64)
        counts_t = np.bincount(items, minlength=train.shape[1]).astype(np.float64)
        log_q = torch.as_tensor(
            np.log(np.maximum(counts_t, 1.0) / counts_t.sum()), dtype=torch.float32, device=device
        )
        trained_items = np.flatnonzero(counts_t > 0)
        # Uniform negatives are drawn with probability negatives / trained items each.
        neg_shift = math.log(max(c.uniform_negatives, 1) / max(trained_items.size, 1))
        opt = torch.optim.AdamW(
            [p for p in net.parameters() if p.requires_grad], lr=c.lr, weight_decay=c.weight_decay
        )
        best, best_blob, stale = -math.inf, _weights_bytes(net), 0
        self.train_log_, self.best_epoch_ = [], c.epochs
        # Small data gets smaller batches: at least `_MIN_STEPS` updates per epoch.
        batch_size = min(c.batch_size, max(64, users.size // _MIN_STEPS))
        with _progress(c.show_progress, c.epochs) as (progress, task):
            for epoch in range(1, c.epochs + 1):
                start = time.perf_counter()
                net.train()
                perm = rng.permutation(users.size)
                total, steps = 0.0, 0
                for s in range(0, perm.size, batch_size):
                    sel = perm[s : s + batch_size]
                    if sel.size < 2:
                        continue
                    hist = _training_windows(
                        train_order, users[sel], items[sel], c, rng, first=train_first
                    )
                    negs = (
                        rng.choice(trained_items, size=c.uniform_negatives)
                        if c.uniform_negatives
                        else np.empty(0, np.int64)
                    )
                    batch = (users[sel], items[sel], hist, negs)
                    loss = self._loss(net, f, batch, log_q=log_q, neg_shift=neg_shift, rng=rng)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += float(loss.detach())
                    steps += 1
                loss_mean = total / max(steps, 1)
                score = None
                if val_users.size:
                    score = self._validate(net, f, train, train_order, held)
                entry = {
                    "epoch": epoch,
                    "loss": round(loss_mean, 5),
                    "ndcg@10": None if score is None else round(score, 5),
                    "seconds": round(time.perf_counter() - start, 3),
                }
                self.train_log_.append(entry)
                log.info("two_tower epoch %d: %s", epoch, entry)
                if progress is not None:
                    shown = "-" if score is None else f"{score:.4f}"
                    progress.update(task, advance=1, loss=f"{loss_mean:.4f}", ndcg=shown)
                if score is None:
                    continue
                if score > best:
                    best, best_blob, stale, self.best_epoch_ = score, _weights_bytes(net), 0, epoch
                    if c.checkpoint_path:
                        with open(c.checkpoint_path, "wb") as fh:
                            fh.write(best_blob.tobytes())
                else:
                    stale += 1
                    if stale >= c.patience and epoch >= c.min_epochs:
                        break
        if val_users.size:
            _load_weights(net, best_blob)
        self._choose_priors(net, f, train=train, order=train_order, first=train_first, held=held)

    def _loss(
        self,
        net: Any,
        f: dict[str, Any],
        batch: tuple[NDArray[np.int64], ...],
        *,
        log_q: Any,
        neg_shift: float,
        rng: np.random.Generator,
    ) -> Any:
        """Sampled softmax over the batch's positives (and uniform negatives), logQ-corrected.

        One item-tower pass covers the positives, the negatives and the history items.
        """
        c = self.config
        torch = _torch()[0]
        users, items, hist, negs = batch
        device = log_q.device
        b = items.size
        valid = hist >= 0
        vectors = self.arch_.get("history_input", "vectors") != "ids"
        pooled = [items, negs, hist[valid]] if vectors else [items, negs]
        uniq, inv = np.unique(np.concatenate(pooled), return_inverse=True)
        vecs = self._item_forward(net, f, uniq, rng.random(uniq.size) < c.id_dropout)
        inv_t = torch.as_tensor(inv, device=device)
        hist_vecs = mask = None
        if vectors:
            hist_vecs = vecs.new_zeros((b, hist.shape[1], vecs.shape[1]))
            mask = torch.as_tensor(valid, device=device)
            hist_vecs[mask] = vecs[inv_t[b + negs.size :]]
        codes = f["ids"][torch.as_tensor(np.maximum(hist, 0), device=device)]
        codes = codes.masked_fill(torch.as_tensor(~valid, device=device), 0)
        drop = rng.random(b) < c.id_dropout
        u = self._user_forward(
            net, users, codes, hist_vecs, mask, drop=drop, lengths=valid.sum(axis=1)
        )
        tau = net.tau()
        items_t = torch.as_tensor(items, device=device)
        logits = u @ vecs[inv_t[:b]].T / tau
        if c.logq_correction:
            logits = logits - (log_q[items_t] + math.log(b))[None, :]
        same = items_t[None, :] == items_t[:, None]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, -1e9)
        if negs.size:
            extra = u @ vecs[inv_t[b : b + negs.size]].T / tau
            if c.logq_correction:
                extra = extra - neg_shift
            negs_t = torch.as_tensor(negs, device=device)
            extra = extra.masked_fill(negs_t[None, :] == items_t[:, None], -1e9)
            logits = torch.cat([logits, extra], dim=1)
        return torch.nn.functional.cross_entropy(logits, torch.arange(b, device=device))

    def _item_forward(
        self,
        net: Any,
        f: dict[str, Any],
        idx: NDArray[np.int64],
        drop: NDArray[np.bool_] | None = None,
    ) -> Any:
        """Item vectors of item indices ``idx`` (ids of ``drop`` rows left out)."""
        torch = _torch()[0]
        device = f["ids"].device
        at = torch.as_tensor(idx, device=device)
        ids = f["ids"][at]
        if drop is not None and drop.any():
            ids = ids.masked_fill(torch.as_tensor(drop, device=device), 0)
        return net.item(ids, f["tokens"][at], f["numeric"][at], f["text"][at])

    def _user_forward(
        self,
        net: Any,
        users: NDArray[np.int64],
        codes: Any,
        hist_vecs: Any,
        mask: Any,
        *,
        lengths: NDArray[np.int64],
        drop: NDArray[np.bool_] | None = None,
    ) -> Any:
        """User vectors of user indices ``users`` (-1: unknown, no attributes) and histories.

        ``codes`` are the history items' id codes (0: padding or no id), for the pooled
        history embeddings; ``hist_vecs`` and ``mask`` their item-tower vectors (None when
        the user tower does not read them); ``lengths`` the number of history items of
        each row.
        """
        torch = _torch()[0]
        device = codes.device
        safe = np.maximum(users, 0)
        blank = users < 0
        if drop is not None:
            blank = blank | drop
        ids = np.where(blank, 0, self.user_codes_[safe])
        tokens = np.where((users < 0)[:, None], 0, self.user_tokens_[safe])
        numeric = np.where((users < 0)[:, None], 0.0, self.user_numeric_[safe])
        if self.arch_.get("length_input", False):
            numeric = np.hstack([numeric, _length_column(lengths, self.config.history_length)])
        if knots := int(self.arch_.get("time_knots", 0)):
            assert self.user_time_ is not None
            # Unknown users (and visitors) are at the latest training time: now.
            times = np.where(users < 0, 1.0, self.user_time_[safe])
            numeric = np.hstack([numeric, _time_columns(times, knots)])

        def t(a: NDArray[Any], kind: Any) -> Any:
            return torch.as_tensor(a, dtype=kind, device=device)

        return net.user(
            t(ids, torch.long),
            t(tokens, torch.long),
            t(numeric, torch.float32),
            None if hist_vecs is None else net.pool(hist_vecs, mask),
            None if net.history is None else net.pool_ids(codes),
        )

    def _item_vectors_of(
        self, net: Any, f: dict[str, Any], idx: NDArray[np.int64]
    ) -> NDArray[np.float32]:
        torch = _torch()[0]
        out = [np.zeros((0, int(self.arch_["output_dim"])), np.float32)]
        with torch.no_grad():
            for s in range(0, idx.size, _CHUNK_ROWS):
                out.append(self._item_forward(net, f, idx[s : s + _CHUNK_ROWS]).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def _users_from_windows(
        self,
        net: Any,
        users: NDArray[np.int64],
        hist: NDArray[np.int64],
        item_vectors: NDArray[np.float32],
        device: str = "cpu",
    ) -> NDArray[np.float32]:
        """User vectors of rows (user indices, -1: unknown) from their history windows."""
        torch = _torch()[0]
        vectors = self.arch_.get("history_input", "vectors") != "ids"
        out = [np.zeros((0, int(self.arch_["output_dim"])), np.float32)]
        with torch.no_grad():
            for s in range(0, users.size, _CHUNK_ROWS):
                h = hist[s : s + _CHUNK_ROWS]
                codes = np.where(h >= 0, self.item_codes_[np.maximum(h, 0)], 0)
                vecs = mask = None
                if vectors:
                    vecs = torch.as_tensor(item_vectors[np.maximum(h, 0)], device=device)
                    mask = torch.as_tensor(h >= 0, device=device)
                codes_t = torch.as_tensor(codes, dtype=torch.long, device=device)
                rows = users[s : s + _CHUNK_ROWS]
                u = self._user_forward(net, rows, codes_t, vecs, mask, lengths=(h >= 0).sum(axis=1))
                out.append(u.cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def _validate(
        self,
        net: Any,
        f: dict[str, Any],
        train: sp.csr_matrix,
        order: tuple[NDArray[np.int64], NDArray[np.int64]],
        held: tuple[NDArray[np.int64], NDArray[np.int64]],
    ) -> float:
        """NDCG@10 (the project's metric) of the held-out interactions, training items excluded."""
        net.eval()
        users, relevant = _held_matrix(held, train.shape[1])
        vectors = self._item_vectors_of(net, f, np.arange(train.shape[1]))
        hist = _windows(order, users, self.config.history_length)
        scores = self._holdout_cosines(
            net, f, seen=train[users], users=users, hist=hist, vectors=vectors
        )
        return _ndcg10(scores, relevant)

    def _holdout_cosines(
        self,
        net: Any,
        f: dict[str, Any],
        *,
        seen: sp.csr_matrix,
        users: NDArray[np.int64],
        hist: NDArray[np.int64],
        vectors: NDArray[np.float32],
    ) -> NDArray[np.float32]:
        """Cosines of ``users`` (their vectors from ``hist``) with every item; ``seen`` -inf."""
        queries = self._users_from_windows(net, users, hist, vectors, str(f["ids"].device))
        scores: NDArray[np.float32] = queries @ vectors.T
        rows = np.repeat(np.arange(users.size), np.diff(seen.indptr))
        scores[rows, seen.indices] = -np.inf
        return scores

    def _choose_priors(
        self,
        net: Any,
        f: dict[str, Any],
        *,
        train: sp.csr_matrix,
        order: tuple[NDArray[np.int64], NDArray[np.int64]],
        first: tuple[NDArray[np.int64], NDArray[np.int64]] | None,
        held: tuple[NDArray[np.int64], NDArray[np.int64]],
    ) -> None:
        """Set the popularity priors: the configured ones, or (``auto``) the holdout's best.

        Each ``auto`` weight is the `_PRIOR_GRID` value of the best NDCG@10 (as `_validate`
        measures it) on the early-stopping holdout, with the popularity of ``train`` (the
        held-out cells not counted: they would favour their own items; an item with no
        count left gets the one its features predict). The warm weight is chosen on the
        holdout users with more than `_COLD_MAX` history items, the cold one on the same
        users and targets with their history cut to their first 1-4 items (the earliest;
        the most recent without timestamps), as a cold user presents them.
        """
        c = self.config
        self.temperature_ = float(net.tau())
        warm, cold = c.popularity_prior, c.cold_popularity_prior
        if "auto" in (warm, cold) and held[0].size:
            net.eval()
            n_items = train.shape[1]
            users, relevant = _held_matrix(held, n_items)
            counts = np.bincount(train.indices, minlength=n_items)
            log_pop = np.log1p(counts).astype(np.float32)
            unseen = np.flatnonzero(counts == 0)
            log_pop[unseen] = self._predicted_log_pop(unseen)
            vectors = self._item_vectors_of(net, f, np.arange(n_items))
            seen = train[users]

            def best(hist: NDArray[np.int64], rows: NDArray[np.bool_]) -> float:
                cos = self._holdout_cosines(
                    net, f, seen=seen[rows], users=users[rows], hist=hist[rows], vectors=vectors
                )
                target = relevant[rows]
                found = [
                    _ndcg10(cos + (self.temperature_ * beta) * log_pop, target)
                    for beta in _PRIOR_GRID
                ]
                log.info(
                    "two_tower popularity prior, NDCG@10 on the holdout per weight: %s",
                    dict(zip(_PRIOR_GRID, np.round(found, 4).tolist(), strict=True)),
                )
                return _PRIOR_GRID[int(np.argmax(found))]

            if warm == "auto":
                hist = _windows(order, users, c.history_length)
                longer = (hist >= 0).sum(axis=1) > _COLD_MAX
                warm = best(hist, longer if longer.any() else np.ones(users.size, bool))
            if cold == "auto":
                keep = np.random.default_rng(c.seed).integers(1, _COLD_MAX + 1, size=users.size)
                hist = _head(_windows(order if first is None else first, users, _COLD_MAX), keep)
                cold = best(hist, np.ones(users.size, bool))
        self.popularity_prior_ = 0.0 if warm == "auto" else float(warm)
        self.cold_popularity_prior_ = 0.0 if cold == "auto" else float(cold)
        log.info(
            "two_tower popularity prior: %s (users with 0-%d items: %s)",
            self.popularity_prior_,
            _COLD_MAX,
            self.cold_popularity_prior_,
        )

    # ---- inference ------------------------------------------------------------------------

    def _net(self) -> Any:
        """The network: the fitted one, or after loading one rebuilt from the weights."""
        if self.net_ is None:
            with _NET_LOCK:
                if self.net_ is None:
                    net = _torch()[1](self.arch_)
                    _load_weights(net, self.weights_)
                    self.net_ = net.eval()
        return self.net_

    def _item_vectors(self, idx: NDArray[np.int64]) -> NDArray[np.float32]:
        return self._item_vectors_of(self._net(), self._item_tensors("cpu"), idx)

    def _known_user_vectors(self, users: NDArray[np.int64]) -> NDArray[np.float32]:
        hist = _windows(
            (self.recent_indptr_, self.recent_items_), users, self.config.history_length
        )
        return self._users_from_windows(self._net(), users, hist, self.item_vectors_)

    def _fold_in(
        self, users: NDArray[np.int64], history: sp.csr_matrix
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """User vectors from history rows (new items first, then the stored recent ones).

        Each row is computed on its own: a user's vector must not depend on who else is in
        the batch (batch and single answers agree exactly). Also returns the number of
        items each vector was built from (the popularity prior's cold or warm weight).
        """
        length = self.config.history_length
        net = self._net()
        out = np.zeros((users.size, self.item_vectors_.shape[1]), np.float32)
        lengths = np.zeros(users.size, np.int64)
        for r, u in enumerate(users.tolist()):
            lo, hi = history.indptr[r], history.indptr[r + 1]
            cols, weights = history.indices[lo:hi], history.data[lo:hi]
            recent = np.empty(0, np.int64)
            if u >= 0:
                recent = self.recent_items_[self.recent_indptr_[u] : self.recent_indptr_[u + 1]]
            new = ~np.isin(cols, recent)
            fresh = cols[new][np.lexsort((cols[new], -weights[new]))]
            window = np.concatenate([fresh, recent]).astype(np.int64)[:length]
            hist = np.full((1, length), -1, np.int64)
            hist[0, : window.size] = window
            lengths[r] = window.size
            row = np.asarray([u], np.int64)
            out[r] = self._users_from_windows(net, row, hist, self.item_vectors_)[0]
        return out, lengths

    def _score(
        self, users: NDArray[np.int64], history: sp.csr_matrix, fold_in: NDArray[np.bool_]
    ) -> NDArray[np.float32]:
        queries = self.user_vectors_[np.maximum(users, 0)].copy()
        built_from = self._history_lengths(users)
        if fold_in.any():
            rows = np.flatnonzero(fold_in)
            queries[rows], built_from[rows] = self._fold_in(users[rows], history[rows])
        lengths = np.diff(history.indptr)
        room = int(lengths.max()) if lengths.size else 0
        return self._rank(queries, room, self._prior_weights(built_from))

    def _history_lengths(self, users: NDArray[np.int64]) -> NDArray[np.int64]:
        """How many stored history items each user's vector was built from (-1 users: 0)."""
        stored = np.diff(self.recent_indptr_)
        return np.where(users >= 0, stored[np.maximum(users, 0)], 0).astype(np.int64)

    @property
    def _prior_on(self) -> bool:
        return bool(self.popularity_prior_ or self.cold_popularity_prior_)

    def _prior_weights(self, lengths: NDArray[np.int64]) -> NDArray[np.float32] | None:
        """Per query, the weight of ``log_pop_`` in its scores (None: the prior is off).

        The scores stay cosines (the logits times the temperature): cos + tau * beta *
        log popularity ranks as cos / tau + beta * log popularity does, and with beta 0
        is the plain cosine.
        """
        if not self._prior_on:
            return None
        beta = np.where(lengths <= _COLD_MAX, self.cold_popularity_prior_, self.popularity_prior_)
        return (self.temperature_ * beta).astype(np.float32)

    def _pop_scale(self) -> float:
        """The largest log popularity: `_index_vectors` holds it scaled into [-1, 1]."""
        top = float(np.abs(self.log_pop_).max()) if self.log_pop_.size else 0.0
        return top if top > 0 else 1.0

    def _index_vectors(self) -> NDArray[np.float32]:
        """What the vector index holds: item vectors, and their log popularity when it counts.

        With the prior on, two more columns: the log popularity scaled into [-1, 1], and
        one that brings every row to the same norm (sqrt 2): a graph index (HNSW) over
        inner products finds neighbours only among vectors of one norm (the popularity
        column alone left it 0.35 of exact search's top 100); the queries hold 0 there,
        so the inner product is unchanged.
        """
        if not self._prior_on:
            return self.item_vectors_
        pop = (self.log_pop_ / self._pop_scale()).astype(np.float64)
        norms = np.einsum("ij,ij->i", self.item_vectors_, self.item_vectors_, dtype=np.float64)
        fill = np.sqrt(np.maximum(2.0 - norms - pop**2, 0.0))
        return np.column_stack([self.item_vectors_, pop, fill]).astype(np.float32)

    def _index_queries(
        self, queries: NDArray[np.float32], weights: NDArray[np.float32] | None
    ) -> NDArray[np.float32]:
        """Queries of the vector index: an inner product with `_index_vectors` is the score."""
        if not self._prior_on:
            return np.ascontiguousarray(queries, dtype=np.float32)
        extra = np.zeros((queries.shape[0], 2), np.float32)
        if weights is not None:
            extra[:, 0] = weights * self._pop_scale()
        return np.ascontiguousarray(np.hstack([queries, extra]), dtype=np.float32)

    def _rank(
        self,
        queries: NDArray[np.float32],
        room: int,
        weights: NDArray[np.float32] | None = None,
    ) -> NDArray[np.float32]:
        """Scores of every item for unit queries: exact, or FAISS candidates (-inf elsewhere).

        ``weights``: per query, the weight of the items' log popularity (`_prior_weights`;
        None: none, as for item-item similarity).
        """
        vectors = self.item_vectors_
        if self.index_ is None:
            scores = np.asarray(queries @ vectors.T, dtype=np.float32)
            if weights is not None:
                scores += weights[:, None] * self.log_pop_[None, :]
            return scores
        scores = np.full((queries.shape[0], vectors.shape[0]), -np.inf, np.float32)
        k = min(len(self.index_), self.config.candidates + room)
        if queries.shape[0] and k > 0:
            found, ids = self.index_.search(self._index_queries(queries, weights), k)
            rows, cols = np.nonzero(ids >= 0)
            scores[rows, ids[rows, cols]] = found[rows, cols]
        return scores

    def _similar_scores(self, items: NDArray[np.int64]) -> NDArray[np.float32]:
        # Item-item similarity is the plain cosine: no popularity prior.
        return self._rank(self.item_vectors_[items], 1)

    def item_index(self, kind: Literal["flat", "ivf", "hnsw"] = "flat") -> Any:
        """The item vectors in a FAISS `VectorIndex` (ids are item indices of ``items_``).

        With the popularity prior on, each item vector carries its log popularity in one
        more column (`_index_vectors`) and each query its prior weight (`_index_queries`):
        the inner product is then the prior-augmented score. An approximate index is
        calibrated on a sample of the user vectors (the queries it will answer): its search
        widens until recall@`ANN_K` of exact search reaches `ANN_TARGET` there.
        """
        from hybridrec.index.faiss_index import IndexParams, VectorIndex

        self._fitted()
        c = self.config
        vectors = self._index_vectors()
        index = VectorIndex.build(vectors, IndexParams(kind=kind, threshold=c.index_threshold))
        if index.kind != "flat":
            rng = np.random.default_rng(c.seed)
            n = self.user_vectors_.shape[0]
            rows = np.sort(rng.choice(n, size=min(n, _CALIBRATION_USERS), replace=False))
            index.calibrate(vectors, self._user_queries(rows), ANN_K, ANN_TARGET)
        return index

    def _user_queries(self, rows: NDArray[np.int64]) -> NDArray[np.float32]:
        """Index queries of known users ``rows`` (their stored vectors and prior weights)."""
        weights = self._prior_weights(self._history_lengths(rows))
        return self._index_queries(self.user_vectors_[rows], weights)

    def ann_recall(
        self, kind: Literal["ivf", "hnsw"] = "ivf", k: int = ANN_K, *, sample: int = 1000
    ) -> float:
        """Recall@k of the approximate item index (as `item_index` builds it) vs exact search.

        Over up to ``sample`` user vectors spread evenly over the vocabulary (not the
        calibration sample). 1.0: it finds every item exact search finds.
        """
        self._fitted()
        items = self._index_vectors()
        k = min(k, items.shape[0])
        n = self.user_vectors_.shape[0]
        rows = np.unique(np.linspace(0, n - 1, num=min(sample, n)).astype(np.int64))
        queries = self._user_queries(rows)
        exact = np.argpartition(-(queries @ items.T), k - 1, axis=1)[:, :k]
        index: Any = self.item_index(kind)
        return float(index.recall(queries, exact))

    def _build_index(self) -> None:
        c = self.config
        self.index_ = None
        n = self.item_vectors_.shape[0]
        if c.index == "flat" or (c.index == "auto" and n < c.index_threshold):
            return
        self.index_ = self.item_index("ivf" if c.index == "auto" else c.index)

    def user_vectors(self, user_ids: Sequence[Any]) -> NDArray[np.float32]:
        """The unit vectors of known users (attribute-only users included)."""
        users = self._fitted()[0]
        return np.asarray(self.user_vectors_[users.index(list(user_ids))])

    # ---- growing the vocabularies ---------------------------------------------------------

    def add_items(self, items_table: pl.DataFrame) -> int:
        """Give catalog items the model does not know vectors from their features alone.

        Known ids are skipped. The items become recommendable (and findable as similar
        items) at once; nothing is retrained.

        Returns:
            The number of items added.
        """
        _, items, user_items = self._fitted()
        if "item_id" not in items_table.columns:
            raise DataError(f"items table has no 'item_id' column (found: {items_table.columns})")
        _check_id_kind(items_table, items)
        known = items.index(items_table["item_id"].to_numpy(), missing="mask") >= 0
        table = items_table.filter(pl.Series(~known)).unique("item_id", keep="first")
        if table.height == 0:
            return 0
        new_ids = table["item_id"].to_numpy()
        new_vocab = Vocab(new_ids, kind="item")
        tokens, numeric, text, pop = self._encode_items(table, new_vocab, np.zeros(len(new_vocab)))
        # New items have no ALS factors (the ALS-initialized variant's input): zeros.
        text = np.hstack([text, np.zeros((text.shape[0], self.cf_dim_), np.float32)])
        codes = np.zeros(len(new_vocab), np.int64)
        vocab = Vocab(np.concatenate([items.ids, new_ids]), kind="item")
        old_pos, new_pos = vocab.index(items.ids), vocab.index(new_vocab.ids)
        self.item_tokens_ = _stack_rows(self.item_tokens_, tokens, old_pos, new_pos)
        self.item_numeric_ = _stack_rows(self.item_numeric_, numeric, old_pos, new_pos)
        self.item_text_ = _stack_rows(self.item_text_, text, old_pos, new_pos)
        self.item_codes_ = _stack_rows(self.item_codes_, codes, old_pos, new_pos)
        # Their log popularity (the popularity prior's) is the one their features predict.
        self.log_pop_ = _stack_rows(self.log_pop_, self._log_pop(pop), old_pos, new_pos)
        self.items_ = vocab
        self.user_items_ = _remap_columns(user_items, old_pos, len(vocab))
        self.recent_items_ = old_pos[self.recent_items_]
        fresh = self._item_vectors(new_pos)
        self.item_vectors_ = _stack_rows(self.item_vectors_, fresh, old_pos, new_pos)
        self._build_index()
        return int(new_ids.size)

    def add_users(self, users_table: pl.DataFrame) -> int:
        """Make users with attributes (and no history yet) answerable, without retraining.

        Known ids are skipped (their attributes are the training ones).

        Returns:
            The number of users added.
        """
        users, _, user_items = self._fitted()
        table = _checked_users(users_table, users)
        known = users.index(table["user_id"].to_numpy(), missing="mask") >= 0
        table = table.filter(pl.Series(~known)).unique("user_id", keep="first")
        if table.height == 0:
            return 0
        new_vocab = Vocab(table["user_id"].to_numpy(), kind="user")
        tokens, numeric = self._encode_users(table, new_vocab)
        vocab = Vocab(np.concatenate([users.ids, new_vocab.ids]), kind="user")
        old_pos, new_pos = vocab.index(users.ids), vocab.index(new_vocab.ids)
        self.user_tokens_ = _stack_rows(self.user_tokens_, tokens, old_pos, new_pos)
        self.user_numeric_ = _stack_rows(self.user_numeric_, numeric, old_pos, new_pos)
        self.user_codes_ = _stack_rows(
            self.user_codes_, np.zeros(len(new_vocab), np.int64), old_pos, new_pos
        )
        if self.user_time_ is not None:
            # No history yet: at the latest training time, as a visitor.
            now = np.ones(len(new_vocab), np.float32)
            self.user_time_ = _stack_rows(self.user_time_, now, old_pos, new_pos)
        self.users_ = vocab
        self.user_items_ = _remap_rows(user_items, old_pos, len(vocab))
        # New users have no history; old users keep their order (the map is monotone).
        lengths = np.zeros(len(vocab), np.int64)
        lengths[old_pos] = np.diff(self.recent_indptr_)
        self.recent_indptr_ = np.zeros(len(vocab) + 1, np.int64)
        np.cumsum(lengths, out=self.recent_indptr_[1:])
        fresh = self._known_user_vectors(new_pos)
        self.user_vectors_ = _stack_rows(self.user_vectors_, fresh, old_pos, new_pos)
        return int(new_vocab.ids.size)

    @property
    def reads_user_attributes(self) -> bool:
        """Whether the user tower reads attributes (the data had a users table)."""
        side = getattr(self, "user_side_", None)
        return side is not None and bool(side.categorical or side.numeric)

    def user_attribute_columns(self) -> list[str]:
        """The attribute columns the user tower reads (categorical, then numeric)."""
        side = getattr(self, "user_side_", None)
        return [] if side is None else [*side.categorical, *side.numeric]

    def user_attributes(self) -> list[dict[str, Any]]:
        """The user tower's attributes: categorical ones with the values it knows, numeric ones.

        Values are those of the feature vocabulary (the most frequent of training), sorted,
        at most `_LISTED_VALUES` per attribute: what a client may offer a visitor to pick.
        """
        side = getattr(self, "user_side_", None)
        if side is None:
            return []
        out: list[dict[str, Any]] = []
        for col in side.categorical:
            prefix = f"{col}{_SEP}"
            values = sorted(str(t)[len(prefix) :] for t in side.vocab if str(t).startswith(prefix))
            out.append({"name": col, "kind": "categorical", "values": values[:_LISTED_VALUES]})
        out.extend({"name": col, "kind": "numeric", "values": []} for col in side.numeric)
        return out

    def with_visitors(self, table: pl.DataFrame) -> TwoTower:
        """A view of this model that knows only the users of ``table``, by their attributes.

        For a request: visitors (ids the model never saw) with attributes, and perhaps a
        few items, are answered from their attributes without retraining and without
        touching this model (requests run concurrently). The view shares the item side
        and the network; only the visitors' rows are encoded (columns the table lacks
        count as missing). Ask the view for exactly the users of ``table``.
        """
        items = self._fitted()[1]
        if "user_id" not in table.columns:
            raise DataError(f"visitors table has no 'user_id' column (found: {table.columns})")
        # The ids only name the request's rows: any type will do (a service's "visitor:...").
        table = table.unique("user_id", keep="first", maintain_order=True)
        for column in self.user_attribute_columns():
            if column not in table.columns:
                table = table.with_columns(pl.lit(None).alias(column))
        self._net()  # built once on this model, shared by every view
        view = copy.copy(self)
        vocab = Vocab(table["user_id"].to_numpy(), kind="user")
        n = len(vocab)
        view.user_tokens_, view.user_numeric_ = self._encode_users(table, vocab)
        view.user_codes_ = np.zeros(n, np.int64)
        if self.user_time_ is not None:
            view.user_time_ = np.ones(n, np.float32)
        view.users_ = vocab
        view.user_items_ = sp.csr_matrix((n, len(items)), dtype=np.float32)
        view.recent_indptr_ = np.zeros(n + 1, np.int64)
        view.recent_items_ = np.empty(0, np.int64)
        view.ranking_ = None
        view.user_vectors_ = view._known_user_vectors(np.arange(n, dtype=np.int64))
        return view

    # ---- persistence ----------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "weights": self.weights_,
            "arch": self.arch_,
            "item_side": self.item_side_.state(),
            "user_side": self.user_side_.state(),
            "pop_stats": None if self.pop_stats_ is None else list(self.pop_stats_),
            "pop_prior": None if self.pop_prior_ is None else self.pop_prior_.state(),
            "text_kind": self.text_kind_,
            "text_encoder": self.text_state_,
            "item_codes": self.item_codes_,
            "item_tokens": self.item_tokens_,
            "item_numeric": self.item_numeric_,
            "item_text": self.item_text_,
            "cf_dim": self.cf_dim_,
            "user_codes": self.user_codes_,
            "user_tokens": self.user_tokens_,
            "user_numeric": self.user_numeric_,
            "user_time": self.user_time_,
            "recent_indptr": self.recent_indptr_,
            "recent_items": self.recent_items_,
            "item_vectors": self.item_vectors_,
            "user_vectors": self.user_vectors_,
            "train_log": self.train_log_,
            "best_epoch": self.best_epoch_,
            "log_pop": self.log_pop_,
            "popularity_prior": self.popularity_prior_,
            "cold_popularity_prior": self.cold_popularity_prior_,
            "temperature": self.temperature_,
            # The approximate index as built and calibrated (FAISS's bytes): loading neither
            # trains nor calibrates it again.
            "index": None if self.index_ is None else self.index_.to_array(),
            "index_params": None if self.index_ is None else self.index_.params_dict(),
            # The vectors are only valid against the vocabularies they were built on.
            "item_ids": None if self.items_ is None else self.items_.ids,
            "user_ids": None if self.users_ is None else self.users_.ids,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        for kind, vocab in (("item", self.items_), ("user", self.users_)):
            ids = state.get(f"{kind}_ids")
            if ids is not None and vocab is not None and not np.array_equal(vocab.ids, ids):
                raise DataError(
                    f"two_tower state covers {len(ids)} {kind}s but was restored with a "
                    f"vocabulary of {len(vocab)}"
                )
        self.weights_ = state["weights"]
        self.arch_ = dict(state["arch"])
        self.item_side_ = _Side.from_state(state["item_side"])
        self.user_side_ = _Side.from_state(state["user_side"])
        pop = state["pop_stats"]
        self.pop_stats_ = None if pop is None else (pop[0], pop[1])
        prior = state.get("pop_prior")
        self.pop_prior_ = None if prior is None else _PopularityPrior.from_state(prior)
        self.text_kind_ = state["text_kind"]
        self.text_state_ = state["text_encoder"]
        # The trailing item_text columns that are ALS factors (bundles before it: none).
        self.cf_dim_ = int(state.get("cf_dim", 0))
        for key in (
            "item_codes",
            "item_tokens",
            "item_numeric",
            "item_text",
            "user_codes",
            "user_tokens",
            "user_numeric",
            "recent_indptr",
            "recent_items",
            "item_vectors",
            "user_vectors",
        ):
            setattr(self, f"{key}_", state[key])
        # Bundles from before the time input: none (their arch has no time knots).
        self.user_time_ = state.get("user_time")
        self.train_log_ = list(state["train_log"])
        self.best_epoch_ = int(state["best_epoch"])
        # Bundles from before the popularity prior: off (their scores are the cosines).
        n_items = np.asarray(self.item_vectors_).shape[0]
        self.log_pop_ = np.asarray(state.get("log_pop", np.zeros(n_items, np.float32)))
        self.popularity_prior_ = float(state.get("popularity_prior", 0.0))
        self.cold_popularity_prior_ = float(state.get("cold_popularity_prior", 0.0))
        self.temperature_ = float(state.get("temperature", self.config.temperature))
        self.net_ = None
        index = state.get("index")
        if index is None:
            self._build_index()  # no index (exact search), or a bundle from before it was saved
        else:
            from hybridrec.index.faiss_index import IndexParams, VectorIndex

            self.index_ = VectorIndex.from_array(index, IndexParams(**state["index_params"]))


# ---- helpers ------------------------------------------------------------------------------


@contextmanager
def _progress(show: bool, total: int) -> Iterator[tuple[Any, Any]]:
    """A rich progress bar over epochs, with the loss and validation NDCG@10 beside it."""
    if not show:
        yield None, None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    progress = Progress(
        TextColumn("[bold]two_tower"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  val ndcg@10 {task.fields[ndcg]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
    with progress:
        yield progress, progress.add_task("train", total=total, loss="-", ndcg="-")


def _checked_users(table: pl.DataFrame, users: Vocab) -> pl.DataFrame:
    """``table`` when it has user ids of the interactions' id type."""
    if "user_id" not in table.columns:
        raise DataError(f"users table has no 'user_id' column (found: {table.columns})")
    text = table.schema["user_id"] == pl.String
    if len(users) and text == users.is_integer:
        kind = ("integers", "text")
        raise DataError(
            f"user attribute ids are {kind[text]} but the interactions' user ids are "
            f"{kind[not users.is_integer]}"
        )
    return table


def _remap_rows(m: sp.csr_matrix, new_rows: NDArray[np.int64], n_rows: int) -> sp.csr_matrix:
    """Move row i to ``new_rows[i]`` in a matrix with ``n_rows`` rows (a monotone map)."""
    return sp.csr_matrix(_remap_columns(sp.csr_matrix(m.T), new_rows, n_rows).T)


def _with_user_vocab(data: InteractionData, table: pl.DataFrame | None) -> InteractionData:
    """``data`` with a user vocabulary covering the user attributes table too."""
    if table is None:
        return data
    table = _checked_users(table, data.users)
    vocab = Vocab(np.concatenate([data.users.ids, table["user_id"].to_numpy()]), kind="user")
    if vocab == data.users:
        return InteractionData(
            data.matrix,
            data.users,
            data.items,
            data.timestamps,
            data.items_table,
            data.events,
            table,
        )
    rows = vocab.index(data.users.ids)
    ts = data.timestamps
    return InteractionData(
        matrix=_remap_rows(data.matrix, rows, len(vocab)),
        users=vocab,
        items=data.items,
        timestamps=None if ts is None else _remap_rows(ts, rows, len(vocab)),
        items_table=data.items_table,
        events=data.events,
        users_table=table,
    )


def _recency_order(data: InteractionData) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Each user's training items, most recent first (by weight, then index, without times)."""
    m = sp.csr_matrix(data.matrix)
    m.sort_indices()
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    key = -m.data.astype(np.float64)
    ts = data.timestamps
    if ts is not None:
        t = sp.csr_matrix(ts)
        t.sort_indices()
        n = m.shape[1]
        keys_t = np.repeat(np.arange(t.shape[0]), np.diff(t.indptr)) * n + t.indices
        keys_m = rows * n + m.indices
        pos = np.minimum(np.searchsorted(keys_t, keys_m), max(keys_t.size - 1, 0))
        found = keys_t[pos] == keys_m if keys_t.size else np.zeros(keys_m.size, bool)
        key = -np.where(found, t.data[pos] if keys_t.size else 0.0, -np.inf)
    order = np.lexsort((m.indices, key, rows))
    return m.indptr.astype(np.int64), m.indices[order].astype(np.int64)


def _earliest_order(
    data: InteractionData, order: tuple[NDArray[np.int64], NDArray[np.int64]]
) -> tuple[NDArray[np.int64], NDArray[np.int64]] | None:
    """Each user's training items earliest first (``order`` reversed; None without times).

    Without timestamps the recency order is by weight, and its reverse is no user's start.
    """
    if data.timestamps is None:
        return None
    indptr, items = order
    rows = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
    back = indptr[rows] + indptr[rows + 1] - 1 - np.arange(items.size)
    return indptr, items[back]


def _truncate(
    order: tuple[NDArray[np.int64], NDArray[np.int64]], length: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    indptr, items = order
    lengths = np.minimum(np.diff(indptr), length)
    new = np.zeros_like(indptr)
    np.cumsum(lengths, out=new[1:])
    take = np.repeat(indptr[:-1] - new[:-1], lengths) + np.arange(new[-1])
    return new, items[take]


def _windows(
    order: tuple[NDArray[np.int64], NDArray[np.int64]], users: NDArray[np.int64], width: int
) -> NDArray[np.int64]:
    """The first ``width`` items of each user's ordered list (-1 pads; -1 users: none)."""
    indptr, items = order
    safe = np.maximum(users, 0)
    starts = indptr[safe]
    ends = np.where(users >= 0, indptr[safe + 1], starts)
    pos = starts[:, None] + np.arange(width)[None, :]
    ok = pos < ends[:, None]
    out = np.full(pos.shape, -1, np.int64)
    out[ok] = items[pos[ok]]
    return out


def _without_target(
    hist: NDArray[np.int64], target: NDArray[np.int64], length: int
) -> NDArray[np.int64]:
    """Windows of ``length + 1`` items → ``length`` items, the training target left out."""
    hist = hist.copy()
    hit = hist == target[:, None]
    hist[hit] = -1
    hist[~hit.any(axis=1), length] = -1
    return _compact(hist)[:, :length]


def _compact(hist: NDArray[np.int64]) -> NDArray[np.int64]:
    """Valid items first in each row, in their order (a stable sort on "is padding")."""
    order = np.argsort(hist < 0, axis=1, kind="stable")
    return np.take_along_axis(hist, order, axis=1)


def _training_windows(
    order: tuple[NDArray[np.int64], NDArray[np.int64]],
    users: NDArray[np.int64],
    targets: NDArray[np.int64],
    config: TwoTowerConfig,
    rng: np.random.Generator,
    *,
    first: tuple[NDArray[np.int64], NDArray[np.int64]] | None = None,
) -> NDArray[np.int64]:
    """The history rows of a training batch (each user's recent items less the target).

    A share of the items is dropped (denoising), and a ``history_dropout`` share of the
    rows cut to 0-4 items, as a cold user has: with ``cold_history="recent"`` the first
    0-4 the dropout left (cut first, the dropout would leave most of them 0-2), with
    ``earliest`` the user's first items before the target (`_earliest_before`; ``first``,
    each user's items earliest first, is None without timestamps: 0-4 random items of
    the window).
    """
    hist = _windows(order, users, config.history_length + 1)
    hist = _without_target(hist, targets, config.history_length)
    full = hist
    if config.history_item_dropout > 0:
        drop = rng.random(hist.shape) < config.history_item_dropout
        hist = _compact(np.where(drop, -1, hist))
    if config.history_dropout <= 0:
        return hist
    rows = np.flatnonzero(rng.random(hist.shape[0]) < config.history_dropout)
    if rows.size == 0:
        return hist
    keep = rng.integers(0, _COLD_MAX + 1, size=rows.size)
    hist = hist.copy()
    if config.cold_history == "recent":
        hist[rows] = _head(hist[rows], keep)
    elif first is not None:
        hist[rows] = _head(_earliest_before(first, users[rows], targets[rows], hist.shape[1]), keep)
    else:
        hist[rows] = _head(_shuffled(full[rows], rng), keep)
    return hist


def _head(hist: NDArray[np.int64], keep: NDArray[np.int64]) -> NDArray[np.int64]:
    """Each row's first ``keep`` entries (the rest -1)."""
    cols = np.arange(hist.shape[1])[None, :]
    return np.where(cols < keep[:, None], hist, -1)


def _earliest_before(
    first: tuple[NDArray[np.int64], NDArray[np.int64]],
    users: NDArray[np.int64],
    targets: NDArray[np.int64],
    width: int,
) -> NDArray[np.int64]:
    """Each user's first `_COLD_MAX` items up to (not including) the target, ``width`` wide.

    A cold user's training row: their first items and one that came after them, as a
    real cold user holds their first items and is asked for what comes next.
    """
    head = _windows(first, users, _COLD_MAX)
    hit = head == targets[:, None]
    before = np.where(hit.any(axis=1), hit.argmax(axis=1), _COLD_MAX)
    head = _head(head, before)
    out = np.full((users.size, width), -1, np.int64)
    w = min(width, _COLD_MAX)
    out[:, :w] = head[:, :w]
    return out


def _shuffled(hist: NDArray[np.int64], rng: np.random.Generator) -> NDArray[np.int64]:
    """Each row's items in a random order (padding last)."""
    keys = np.where(hist >= 0, rng.random(hist.shape), 2.0)
    return np.take_along_axis(hist, np.argsort(keys, axis=1, kind="stable"), axis=1)


def _held_matrix(
    held: tuple[NDArray[np.int64], NDArray[np.int64]], n_items: int
) -> tuple[NDArray[np.int64], sp.csr_matrix]:
    """The holdout's users (sorted) and their held-out items as a users x items matrix."""
    val_users, val_items = held
    users, row = np.unique(val_users, return_inverse=True)
    ones = np.ones(val_users.size, np.float32)
    return users, sp.csr_matrix((ones, (row, val_items)), shape=(users.size, n_items))


def _ndcg10(scores: NDArray[np.float32], relevant: sp.csr_matrix) -> float:
    """Mean NDCG@10 (the project's metric) of ``scores`` against ``relevant`` (row-aligned)."""
    top, _ = topk_rows(scores, 10)
    return float(ndcg_at_k(hits_matrix(top, relevant), np.diff(relevant.indptr)).mean())


def _length_column(lengths: NDArray[np.int64], longest: int) -> NDArray[np.float32]:
    """History lengths as a user-tower input in [0, 1] (log scale).

    A mean of pooled embeddings hides how many items it averages; one item is weak evidence
    (the answer should lean on what is popular), two hundred strong, and the tower can
    only weigh them differently if it sees the count.
    """
    scaled = np.log1p(np.asarray(lengths, np.float64)) / math.log1p(max(longest, 1))
    return scaled[:, None].astype(np.float32)


def _user_times(data: InteractionData) -> NDArray[np.float32] | None:
    """Each user's latest training time in [0, 1] of the data's time range (None: no times).

    Users without a time (no interactions, or timestamps missing) are at 1, the latest.
    """
    ts = data.timestamps
    if ts is None:
        return None
    t = sp.csr_matrix(ts)
    if t.nnz == 0:
        return None
    values = t.data.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    out = np.ones(t.shape[0], np.float32)
    rows = np.flatnonzero(np.diff(t.indptr) > 0)
    if high > low and rows.size:
        latest = np.maximum.reduceat(values, t.indptr[rows])
        out[rows] = ((latest - low) / (high - low)).astype(np.float32)
    return out


def _time_columns(times: NDArray[Any], knots: int) -> NDArray[np.float32]:
    """Times in [0, 1] as ``knots`` hat functions on evenly spaced knots (rows sum to 1).

    A piecewise-linear code: the tower can tell eras apart (what was popular when the user
    came) without having to carve them out of one scalar.
    """
    pos = np.clip(np.asarray(times, np.float64), 0.0, 1.0)[:, None] * (knots - 1)
    return np.maximum(0.0, 1.0 - np.abs(pos - np.arange(knots)[None, :])).astype(np.float32)


def _holdout(
    matrix: sp.csr_matrix, n: int, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Held-out (user, item) cells for early stopping, sorted by user.

    Up to ``n`` users with at least three items (half of those at most) each hold out a
    `_HOLDOUT_SHARE` of their items (at least one): one item each from a few hundred users
    is too noisy a signal to stop training on.
    """
    lengths = np.diff(matrix.indptr)
    eligible = np.flatnonzero(lengths >= 3)
    n = min(n, eligible.size // 2)
    if n < 10:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    users = np.sort(rng.choice(eligible, size=n, replace=False))
    counts = lengths[users]
    take = np.maximum(1, (counts * _HOLDOUT_SHARE).astype(np.int64))
    owner = np.repeat(np.arange(users.size), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    pos = np.repeat(matrix.indptr[users], counts) + np.arange(owner.size) - starts
    # Each item's rank in a random order of its user's items; the first `take` are held out.
    rank = np.empty(owner.size, np.int64)
    rank[np.lexsort((rng.random(owner.size), owner))] = np.arange(owner.size) - starts
    pick = rank < take[owner]
    return users[owner[pick]].astype(np.int64), matrix.indices[pos[pick]].astype(np.int64)


def _drop_cells(
    order: tuple[NDArray[np.int64], NDArray[np.int64]],
    users: NDArray[np.int64],
    items: NDArray[np.int64],
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The ordered lists without the (user, item) cells given."""
    indptr, ordered = order
    if users.size == 0:
        return order
    rows = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
    n = int(ordered.max()) + 1 if ordered.size else 1
    n = max(n, int(items.max()) + 1)
    drop = np.isin(rows * n + ordered, users * n + items)
    lengths = np.bincount(rows[~drop], minlength=indptr.size - 1)
    new = np.zeros_like(indptr)
    np.cumsum(lengths, out=new[1:])
    return new, ordered[~drop]
