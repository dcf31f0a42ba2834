"""The `Recommender` contract every model implements, and the machinery they share.

Contract (every recommender passes the shared test suite in ``tests/unit/test_contract.py``):

- ``fit(data)`` learns from an `InteractionData` and returns ``self``. Construction does no
  work; learned state exists only after ``fit`` (or ``load``). Hyperparameters live in a
  pydantic config (``extra="forbid"``) stored with the model.
- ``recommend(user_ids, k, *, exclude_seen, filters, history)`` answers a batch of users with
  a `Recommendations` batch: per user up to ``k`` external item ids with scores, best first.
  Batch and single-user calls give identical rows.

  * ``exclude_seen`` (default True) drops items in the user's training history and in the
    extra ``history`` given for the call.
  * ``filters`` (`ItemFilter`) keeps only allowed items and drops denied ones.
  * ``history`` maps a user id to item ids (or ``{item_id: weight}``) seen since training.
    For a user the model knows, it is added to the training history; for a user it does not
    know, it is the whole history and the model *folds the user in* (e.g. solves ALS user
    factors against the fixed item factors), so no user with history gets an empty answer.
    Items in ``history`` that the model does not know are ignored.
  * A user id that is neither known nor in ``history`` raises `UnknownIdError`.
  * A user with an empty history gets an empty row from a personalized model (there is
    nothing to personalize on; the hybrid's fallback chain fills it). Models that do not
    need a history (popularity) answer everyone, and models that learned a representation
    of each known user (ALS factors) answer known users even when their stored history is
    empty (factors imported without interactions).
  * Rows may hold fewer than ``k`` items when filters or the catalog leave fewer; ``k`` is
    capped at the catalog size (the batch has ``min(k, n_items)`` columns), so a huge ``k``
    never allocates more than the catalog.
- ``similar_items(item_ids, k)`` returns, per query item, the ``k`` most similar other items;
  an unknown item raises `UnknownIdError`.
- ``save(path)`` writes the config and learned state in one file, atomically;
  ``Recommender.load(path)`` restores a model whose output is identical.
"""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, ValidationError

from hybridrec.data.vocab import Vocab
from hybridrec.errors import ConfigError, DataError, HybridrecError, NotFittedError, UnknownIdError
from hybridrec.models import topk
from hybridrec.models.footprint import SPARSE_OPS, DataShape, Footprint
from hybridrec.models.recommendations import History, ItemFilter, Recommendations
from hybridrec.models.topk import check_k, ranked_rows, topk_rows

if TYPE_CHECKING:
    # Serving a bundle needs neither the data pipeline nor joblib's writer.
    from hybridrec.data.dataset import InteractionData

__all__ = [
    "History",
    "ItemFilter",
    "ModelConfig",
    "Proposal",
    "Recommendations",
    "Recommender",
    "batch_threads",
    "dense_proposal",
    "sparse_times_dense",
    "topk_rows",
]


# At most this many threads score blocks of one batch (each holds a block and temporaries).
_MAX_THREADS = 8
_SAVE_FORMAT = 1


class ModelConfig(BaseModel):
    """Base of every model's hyperparameters: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def sparse_times_dense(rows: sp.csr_matrix, dense: NDArray[Any]) -> NDArray[np.float32]:
    """``rows @ dense`` reading only the rows of ``dense`` that ``rows`` uses.

    ``dense`` may be a memory-mapped item × item matrix (EASE weights): one user with three
    items of history must not page in all of it. scipy's product walks the stored cells and
    reads only those rows, when ``dense`` is row-major; otherwise (scipy would copy it whole)
    the used rows are gathered first. Both sum in the same order: equal results.
    """
    if dense.flags.c_contiguous:
        return np.asarray(rows.astype(dense.dtype) @ np.asarray(dense), dtype=np.float32)
    cols = np.unique(rows.indices)
    if cols.size == 0:
        return np.zeros((rows.shape[0], dense.shape[1]), np.float32)
    sub = np.ascontiguousarray(dense[cols])
    # ``rows[:, cols]`` built directly (scipy's column indexing costs more than the product
    # for one user).
    compact = sp.csr_matrix(
        (rows.data.astype(sub.dtype), np.searchsorted(cols, rows.indices), rows.indptr),
        shape=(rows.shape[0], cols.size),
    )
    compact.sum_duplicates()
    return np.asarray(compact @ sub, dtype=np.float32)


@dataclass(frozen=True)
class Proposal:
    """A model's candidates for a block of users, as a hybrid component asks for them.

    Attributes:
        top: Item indices (rows × n), best first, ties by index; -1 pads short rows:
            exactly ``topk_rows(block_scores, n)[0]``.
        at: Scores at item indices (rows × c; -1 gives -inf), as the dense block holds them
            (-inf for seen items when they are excluded, and for rows the model cannot answer).
    """

    top: NDArray[np.int64]
    at: Callable[[NDArray[np.int64]], NDArray[np.float32]]


def dense_proposal(scores: NDArray[np.float32], n: int) -> Proposal:
    """The `Proposal` of a dense score block."""

    def at(cands: NDArray[np.int64]) -> NDArray[np.float32]:
        picked = np.take_along_axis(scores, np.maximum(cands, 0), axis=1)
        picked[cands < 0] = -np.inf
        return picked

    return Proposal(topk_rows(scores, n)[0], at)


class Recommender(ABC):
    """Base class of all recommenders; see the module docstring for the full contract.

    Subclasses set ``name`` and ``Config``, and implement ``_fit`` and ``_score`` (and
    ``_similar_scores`` for item similarity); the base class owns id mapping, history
    merging, exclusion, filters, top-k, batching and persistence.
    """

    name: ClassVar[str] = "base"
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    #: Whether an empty history makes the model unable to answer (see the contract).
    needs_history: ClassVar[bool] = True
    #: Whether fitting needs the item catalog (``InteractionData.items_table``).
    needs_catalog: ClassVar[bool] = False
    #: Which bundle file holds the model: "cf" (loaded at start-up) or "content" (lazily).
    bundle_part: ClassVar[str] = "cf"
    #: Whether known users have a learned representation (factors) that answers even when
    #: their stored history is empty (as after importing factors without interactions).
    represents_users: ClassVar[bool] = False
    #: Whether `precompute_ranking` pays: the model scores the whole catalog for every
    #: request (ALS, EASE), so a stored ranking of each known user saves that work.
    ranks_whole_catalog: ClassVar[bool] = False
    #: State keys of user and item vectors whose dot products are a known user's scores
    #: (no new history; only for models that `represents_users`): a bundle answers such a
    #: user from them without building the model (`hybridrec.models.topk.dot_topk`).
    dot_state: ClassVar[tuple[str, str] | None] = None

    def __init__(self, config: ModelConfig | None = None, **params: Any) -> None:
        if config is not None and params:
            raise ConfigError("give either a config object or keyword parameters, not both")
        if config is None:
            try:
                config = self.Config(**params)
            except ValidationError as exc:
                raise ConfigError(_validation_message(self.name, exc)) from None
        self.config = config
        self.users_: Vocab | None = None
        self.items_: Vocab | None = None
        self.user_items_: sp.csr_matrix | None = None
        #: Known users' stored top-N (`precompute_ranking`): ``items`` (users × N, int32,
        #: -1 past the end of a short ranking) and ``scores`` (float32).
        self.ranking_: dict[str, NDArray[Any]] | None = None

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump().items())
        return f"{type(self).__name__}({params})"

    # ---- learning -------------------------------------------------------------------------

    def fit(self, data: InteractionData) -> Self:
        """Learn from training interactions; returns ``self``."""
        if data.matrix.nnz == 0:
            raise DataError("cannot fit on an empty interaction matrix")
        self.users_ = data.users
        self.items_ = data.items
        self.user_items_ = data.matrix.astype(np.float32).tocsr()
        self.ranking_ = None
        self._fit(data)
        return self

    def precompute_ranking(self, n: int, max_bytes: int) -> bool:
        """Store every known user's top ``n`` (seen items excluded), as `recommend` ranks them.

        A request for a known user with no new history and seen items excluded then reads
        its answer there instead of scoring the catalog: the same items in the same order
        (to the rounding of a batched product), item filters included whenever the stored
        ranking holds ``k`` items that pass them (else the catalog is scored as before).
        Nothing is stored when the table would take more than ``max_bytes``.
        Returns whether it stored it.
        """
        users = self._fitted()[0]
        n = min(n, len(self._fitted()[1]))
        self.ranking_ = None
        if n <= 0 or len(users) * n * 8 > max_bytes:
            return False
        recs = self.recommend(users.ids, n)
        self.ranking_ = {
            "items": recs.indices.astype(np.int32),
            "scores": recs.scores.astype(np.float32),
        }
        return True

    def _stored_topk(
        self,
        users: NDArray[np.int64],
        fold_in: NDArray[np.bool_],
        k: int,
        *,
        exclude_seen: bool,
        allowed: NDArray[np.bool_] | None,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]] | None:
        """`_block_topk` from `precompute_ranking`'s table, or None when it cannot answer."""
        stored = self.ranking_
        if stored is None or not exclude_seen or users.size == 0 or fold_in.any():
            return None
        table = stored["items"]
        if users.min() < 0 or users.max() >= table.shape[0]:
            return None
        n_items = len(self._fitted()[1])
        return ranked_rows(table[users], stored["scores"][users], k, n_items, allowed=allowed)

    @abstractmethod
    def _fit(self, data: InteractionData) -> None:
        """Learn model state from ``data`` (vocabularies are already stored)."""

    @abstractmethod
    def _score(
        self, users: NDArray[np.int64], history: sp.csr_matrix, fold_in: NDArray[np.bool_]
    ) -> NDArray[np.float32]:
        """Dense scores (len(users) × n_items) for a block of users.

        Args:
            users: User indices; -1 for users unknown to the model.
            history: The users' full histories (training rows plus extra history).
            fold_in: Rows whose representation must be computed from ``history`` (unknown
                users, or known users with extra history).
        """

    def _similar_scores(self, items: NDArray[np.int64]) -> NDArray[np.float32]:
        """Dense similarity (len(items) × n_items) of query items to all items."""
        raise HybridrecError(f"model {self.name!r} does not support similar_items")

    # ---- answering ------------------------------------------------------------------------

    def _fitted(self) -> tuple[Vocab, Vocab, sp.csr_matrix]:
        if self.users_ is None or self.items_ is None or self.user_items_ is None:
            raise NotFittedError(f"model {self.name!r} is not fitted; call fit() or load()")
        return self.users_, self.items_, self.user_items_

    def _histories(
        self, user_ids: Sequence[Any] | NDArray[Any], history: History | None
    ) -> tuple[NDArray[Any], NDArray[np.int64], sp.csr_matrix, NDArray[np.bool_]]:
        """Resolve users to indices and build their full history rows."""
        users, items, user_items = self._fitted()
        ids = users.coerce(np.asarray(user_ids).ravel())
        idx = users.index(ids, missing="mask")
        extra = None
        fold_in = np.zeros(ids.size, dtype=bool)
        if history:
            extra, has_extra = _history_matrix(history, ids, users, items)
            fold_in = has_extra
        unknown = (idx < 0) & ~fold_in
        if unknown.any():
            raise UnknownIdError(
                "user",
                [v.item() if isinstance(v, np.generic) else v for v in ids[unknown]],
                hint="not in the model's training data and no history was given",
            )
        rows = _training_rows(user_items, idx)
        if extra is not None:
            rows = rows + extra
            rows.sum_duplicates()
            rows.sort_indices()
        return ids, idx, rows.astype(np.float32, copy=False), fold_in

    def recommend(
        self,
        user_ids: Sequence[Any] | NDArray[Any],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        filters: ItemFilter | None = None,
        history: History | None = None,
    ) -> Recommendations:
        """Recommend up to ``k`` items to each user; see the module docstring for the rules."""
        check_k(k)
        items = self._fitted()[1]
        allowed = filters.mask(items) if filters else None
        if self.ranking_ is not None and not history:
            # Known users answered from the stored ranking need no history rows at all.
            users = self._fitted()[0]
            ids = users.coerce(np.asarray(user_ids).ravel())
            idx = users.index(ids, missing="mask")
            stored = self._stored_topk(
                idx, np.zeros(ids.size, bool), k, exclude_seen=exclude_seen, allowed=allowed
            )
            if stored is not None:
                return Recommendations(ids, stored[0], stored[1], items)
        ids, idx, hist, fold_in = self._histories(user_ids, history)
        n_items = len(items)
        # No row can hold more items than the catalog: k is capped there, so a huge k
        # allocates nothing more than the catalog (rows are padded only up to it).
        k = min(k, max(n_items, 1))
        block = max(1, topk.BLOCK_CELLS // max(n_items, 1))
        out_idx = np.full((ids.size, k), -1, np.int64)
        out_val = np.full((ids.size, k), -np.inf, np.float32)

        def run(start: int) -> None:
            sl = slice(start, start + block)
            # One block for all rows (a request): scipy's row slicing costs as much as ALS.
            rows = hist if block >= ids.size else hist[sl]
            top, val = self._block_topk(
                idx[sl], rows, fold_in[sl], k, exclude_seen=exclude_seen, allowed=allowed
            )
            out_idx[sl, : top.shape[1]], out_val[sl, : top.shape[1]] = top, val

        for_blocks(ids.size, block, run)
        return Recommendations(ids, out_idx, out_val, items)

    def _block_scores(
        self,
        users: NDArray[np.int64],
        history: sp.csr_matrix,
        fold_in: NDArray[np.bool_],
        *,
        exclude_seen: bool,
    ) -> NDArray[np.float32]:
        """`_score` with the contract's rules applied.

        Rows the model cannot answer (no history to personalize on) and, when asked, the
        users' seen items get -inf. Composite models (hybrids) call this on their
        components, so the rules live here once.
        """
        scores = self._score(users, history, fold_in)
        return self._apply_rules(scores, users, history, fold_in, exclude_seen=exclude_seen)

    def _apply_rules(
        self,
        scores: NDArray[Any],
        users: NDArray[np.int64],
        history: sp.csr_matrix,
        fold_in: NDArray[np.bool_],
        *,
        exclude_seen: bool,
    ) -> NDArray[np.float32]:
        """The contract's rules on raw scores (``history`` in the scores' item columns)."""
        scores = np.asarray(scores, dtype=np.float32)
        if not scores.flags.writeable:
            scores = scores.copy()
        if self.needs_history:
            blank = np.diff(history.indptr) == 0
            if self.represents_users:
                blank &= (users < 0) | fold_in
            scores[blank] = -np.inf
        if exclude_seen:
            rows = np.repeat(np.arange(history.shape[0]), np.diff(history.indptr))
            scores[rows, history.indices] = -np.inf
        return scores

    def _score_columns(
        self,
        users: NDArray[np.int64],
        history: sp.csr_matrix,
        fold_in: NDArray[np.bool_],
        cols: NDArray[np.int64],
    ) -> NDArray[np.float32]:
        """`_score` at item columns ``cols`` only (a composite over fewer items asks this).

        Models that can score a subset of items for less than all of them override it
        (content: its catalog is larger than the collaborative models' items).
        """
        return np.asarray(self._score(users, history, fold_in), dtype=np.float32)[:, cols]

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
        """The top ``k`` of a block (`topk_rows` of `_block_scores`, ``allowed`` items only).

        Models that can rank without a dense block (the hybrid, over its candidate union)
        override it; the answer must equal the dense one, ties broken by item index. A model
        with its own `_propose` (sparse or shared-ranking scores) ranks through it when no
        item filter applies.
        """
        stored = self._stored_topk(users, fold_in, k, exclude_seen=exclude_seen, allowed=allowed)
        if stored is not None:
            return stored
        if allowed is None and type(self)._propose is not Recommender._propose:
            proposal = self._propose(users, history, fold_in, k, exclude_seen=exclude_seen)
            return proposal.top, proposal.at(proposal.top)
        scores = self._block_scores(users, history, fold_in, exclude_seen=exclude_seen)
        if allowed is not None:
            scores[:, ~allowed] = -np.inf
        return topk_rows(scores, k)

    def _propose(
        self,
        users: NDArray[np.int64],
        history: sp.csr_matrix,
        fold_in: NDArray[np.bool_],
        n: int,
        *,
        exclude_seen: bool,
    ) -> Proposal:
        """This model's top ``n`` per row as a hybrid component, and its scores at any items.

        Dense by default (`_block_scores`, then `topk_rows`); models whose scores are sparse
        or shared by every user override it, with the same items and scores.
        """
        return dense_proposal(
            self._block_scores(users, history, fold_in, exclude_seen=exclude_seen), n
        )

    def user_attributes(self) -> list[dict[str, Any]]:
        """The user attributes this model reads: what a visitor may send with a request.

        One entry per attribute: ``name``, ``kind`` (``categorical`` or ``numeric``) and, for
        a categorical one, ``values`` (those the model knows). None for most models; the
        two-tower lists the users-table columns its user tower reads.
        """
        return []

    def similar_items(self, item_ids: Sequence[Any] | NDArray[Any], k: int = 10) -> Recommendations:
        """The ``k`` items most similar to each query item (the item itself excluded)."""
        check_k(k)
        items = self._fitted()[1]
        ids = items.coerce(np.asarray(item_ids).ravel())
        idx = items.index(ids)
        # Every other item at most (the query item is excluded), as in `recommend`.
        k = min(k, max(len(items) - 1, 1))
        block = max(1, topk.BLOCK_CELLS // max(len(items), 1))
        out_idx = np.full((ids.size, k), -1, np.int64)
        out_val = np.full((ids.size, k), -np.inf, np.float32)
        for start in range(0, ids.size, block):
            sl = slice(start, start + block)
            scores = np.asarray(self._similar_scores(idx[sl]), dtype=np.float32)
            scores[np.arange(scores.shape[0]), idx[sl]] = -np.inf
            out_idx[sl], out_val[sl] = topk_rows(scores, k)
        return Recommendations(ids, out_idx, out_val, items)

    # ---- cost -------------------------------------------------------------------------------

    @classmethod
    def footprint(cls, config: ModelConfig, shape: DataShape) -> Footprint:
        """Estimated peak memory and time of fitting on data of ``shape``.

        The default counts the training matrix and a few working copies of it; models whose
        state grows otherwise (factors, item × item matrices) override it.
        """
        return Footprint(bytes=shape.nnz * 12 * 4, seconds=shape.nnz / SPARSE_OPS)

    # ---- persistence ----------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        """Learned state beyond vocabularies and the training matrix (override to extend)."""
        return {}

    def _set_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what `_state` returned."""

    def export_state(self, siblings: Mapping[str, Recommender] | None = None) -> dict[str, Any]:
        """Model name, config and learned state, without vocabularies or training matrix.

        With `from_state` this is how bundles store models: the vocabularies and the
        training matrix, shared by the models of a pipeline, are stored once beside them.

        Args:
            siblings: The other models stored alongside (name → model); a model built from
                others (a hybrid) stores references to them instead of copies.
        """
        self._fitted()
        exported = {"model": self.name, "config": self.config.model_dump(), "state": self._state()}
        if self.ranking_ is not None:
            exported["ranking"] = self.ranking_
        if self.dot_state is not None and self.represents_users:
            exported["dot"] = list(self.dot_state)
        return exported

    @staticmethod
    def from_state(
        exported: Mapping[str, Any], users: Vocab, items: Vocab, user_items: sp.csr_matrix
    ) -> Recommender:
        """Rebuild a model from `export_state` output and its vocabularies and matrix."""
        from hybridrec.models.registry import get_model_class

        klass = get_model_class(exported["model"])
        model: Recommender = klass(**exported["config"])
        model.users_ = users
        model.items_ = items
        model.user_items_ = user_items
        model._set_state(dict(exported["state"]))
        ranking = exported.get("ranking")
        model.ranking_ = dict(ranking) if ranking else None
        return model

    def save(self, path: str | Path) -> Path:
        """Write config and learned state to ``path`` atomically (temp file + rename)."""
        users, items, user_items = self._fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": _SAVE_FORMAT,
            "users": users,
            "items": items,
            "user_items": user_items,
            **self.export_state(),
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            import joblib

            joblib.dump(payload, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | Path, *, mmap: bool = False) -> Recommender:
        """Load a model saved with `save`; ``Recommender.load`` picks the class by name.

        Args:
            path: The file `save` wrote.
            mmap: Memory-map the arrays read-only instead of reading them.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no saved model there")
        from hybridrec.bundle.safety import load_pickle

        payload = load_pickle(path, mmap=mmap)
        if not isinstance(payload, dict) or payload.get("format") != _SAVE_FORMAT:
            raise DataError(f"{path}: not a hybridrec model file (or an unsupported format)")
        if cls is not Recommender and payload.get("model") != cls.name:
            raise DataError(
                f"{path}: holds a {payload.get('model')!r} model, not {cls.name!r} "
                "(Recommender.load picks the class by itself)"
            )
        return Recommender.from_state(
            payload, payload["users"], payload["items"], payload["user_items"]
        )


def _training_rows(user_items: sp.csr_matrix, idx: NDArray[np.int64]) -> sp.csr_matrix:
    """The training rows of users ``idx`` (empty rows for -1), canonical (sorted, no repeats).

    Sliced straight from the CSR arrays: scipy's fancy row indexing and masking cost more
    than the scoring itself when a request asks for one user.
    """
    known = idx >= 0
    safe = np.where(known, idx, 0)
    starts = user_items.indptr[safe].astype(np.int64)
    lengths = np.where(known, user_items.indptr[safe + 1] - starts, 0)
    indptr = np.zeros(idx.size + 1, np.int64)
    np.cumsum(lengths, out=indptr[1:])
    take = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
    rows = sp.csr_matrix(
        (user_items.data[take], user_items.indices[take], indptr),
        shape=(idx.size, user_items.shape[1]),
    )
    rows.sum_duplicates()
    rows.sort_indices()
    return rows


def for_blocks(n: int, block: int, run: Callable[[int], None]) -> None:
    """``run(start)`` for every block of ``block`` rows out of ``n``, on `batch_threads` threads.

    BLAS products, partitions and comparisons release the GIL; BLAS itself stays on one
    thread per block so the pool does not oversubscribe. Peak memory is about one block's
    temporaries per thread.
    """
    starts = range(0, n, max(block, 1))
    workers = min(len(starts), batch_threads())
    if workers <= 1:
        for start in starts:
            run(start)
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"), ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, starts))


def batch_threads() -> int:
    """Threads that score the blocks of one batch: ``HYBRIDREC_THREADS``, else the cores (≤ 8).

    Raises:
        ConfigError: ``HYBRIDREC_THREADS`` is not a positive integer.
    """
    raw = os.environ.get("HYBRIDREC_THREADS", "").strip()
    if raw:
        if not raw.isdigit() or int(raw) <= 0:
            raise ConfigError(f"HYBRIDREC_THREADS must be a positive integer (got {raw!r})")
        return int(raw)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, _MAX_THREADS))


def _history_matrix(
    history: History, ids: NDArray[Any], users: Vocab, items: Vocab
) -> tuple[sp.csr_matrix, NDArray[np.bool_]]:
    """Extra-history rows aligned with ``ids``, and which rows got any history entry."""
    rows, cols, vals = [], [], []
    has = np.zeros(ids.size, dtype=bool)
    lookup = {(v.item() if isinstance(v, np.generic) else v): i for i, v in enumerate(ids)}
    for raw_user, entries in history.items():
        key = users.coerce(np.asarray([raw_user]))[0]
        key = key.item() if isinstance(key, np.generic) else key
        pos = lookup.get(key)
        if pos is None:
            continue
        if isinstance(entries, Mapping):
            item_ids, weights = list(entries.keys()), [float(w) for w in entries.values()]
        else:
            item_ids, weights = list(entries), [1.0] * len(entries)
        if not item_ids:
            has[pos] = True
            continue
        idx = items.index(item_ids, missing="mask")
        ok = idx >= 0
        has[pos] = True
        rows.extend([pos] * int(ok.sum()))
        cols.extend(idx[ok].tolist())
        vals.extend(np.asarray(weights)[ok].tolist())
    m = sp.csr_matrix(
        (np.asarray(vals, np.float32), (np.asarray(rows, np.int64), np.asarray(cols, np.int64))),
        shape=(ids.size, len(items)),
    )
    return m, has


def _validation_message(model: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(config)"
        parts.append(f"{loc}: {err['msg']}")
    return f"invalid config for model {model!r}: " + "; ".join(parts)
