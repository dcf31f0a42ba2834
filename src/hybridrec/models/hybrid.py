"""Hybrids: a weighted blend of recommenders, and a router by the length of a user's history.

Both are `Recommender`s built on *components*: other fitted models of the same pipeline,
named by their pipeline names. In a pipeline the components are the pipeline's own fitted
models (attached, never refit, and stored once in the bundle: the hybrid keeps references);
standalone, a hybrid fits the components it is missing itself (``params`` gives their
hyperparameters, the name is the registered model name).

Blend: each component proposes its top ``candidates`` items per user (seen items excluded);
over the union of the proposals each component's scores are normalized per user (min-max,
z-score, or by rank), and the hybrid scores are their weighted sum. A component that cannot
answer a user (a personalized model and an empty history) sits that user out and the other
weights carry the score. Weights come from the config, or from `tune_weights`: a search
over the weight simplex on a validation split.

Router: cold users (fewer than ``cold_below`` interactions) are answered by one component,
warm by another, hot (at least ``hot_from``) by a third; thresholds and components in the
config.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from pydantic import Field, model_validator

from hybridrec.data.dataset import InteractionData
from hybridrec.data.vocab import Vocab
from hybridrec.errors import ConfigError, HybridrecError
from hybridrec.models import topk
from hybridrec.models.base import (
    History,
    ItemFilter,
    ModelConfig,
    Proposal,
    Recommendations,
    Recommender,
    _training_rows,
    dense_proposal,
    for_blocks,
    topk_rows,
)
from hybridrec.models.registry import create_model, register

__all__ = [
    "ComposedRecommender",
    "Hybrid",
    "HybridConfig",
    "Router",
    "RouterConfig",
    "mixed",
    "normalize_scores",
    "simplex_grid",
    "tune_weights",
]

Normalization = Literal["minmax", "zscore", "rank"]

#: Default bound of `Hybrid.precompute_candidates`'s tables (256 MiB).
PRECOMPUTE_BYTES = 256 * 2**20

# Per-thread request context: whether the running recommend call excludes seen items.
_CONTEXT = threading.local()


def running_exclude_seen() -> bool:
    """Whether the ``recommend`` call running on this thread excludes seen items."""
    return bool(getattr(_CONTEXT, "exclude_seen", True))


def normalize_scores(scores: NDArray[Any], mask: NDArray[np.bool_], method: Normalization) -> Any:
    """Per-row normalization of ``scores`` over the cells where ``mask`` is True.

    ``minmax`` maps each row's candidates to [0, 1]; ``zscore`` centres and scales them;
    ``rank`` gives the best candidate 1 and the worst 1/n (n candidates in the row). Cells
    outside the mask are 0. Masked sums, not NaN-aware reductions: a request's one row
    costs a few array operations.
    """
    mask = np.asarray(mask, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    # Infinite scores in the mask are treated like NaN: they get 0 and take no part.
    mask = mask & np.isfinite(s)
    s = np.where(mask, s, 0.0)
    n = np.count_nonzero(mask, axis=1, keepdims=True)
    if method == "rank":
        filled = np.where(mask, s, -np.inf)
        order = np.argsort(-filled, axis=1, kind="stable")
        ranks = np.empty_like(order)
        rows = np.arange(s.shape[0])[:, None]
        ranks[rows, order] = np.arange(s.shape[1])[None, :]
        return np.where(mask, (n - ranks) / np.maximum(n, 1), 0.0)
    if method == "minmax":
        lo = np.where(mask, s, np.inf).min(axis=1, keepdims=True)
        hi = np.where(mask, s, -np.inf).max(axis=1, keepdims=True)
        span = hi - lo
        out = (s - np.where(n > 0, lo, 0.0)) / np.where(span > 0, span, 1.0)
    else:
        count = np.maximum(n, 1)
        mean = s.sum(axis=1, keepdims=True) / count
        dev = np.where(mask, s - mean, 0.0)
        std = np.sqrt((dev * dev).sum(axis=1, keepdims=True) / count)
        out = dev / np.where(std > 0, std, 1.0)
    return np.where(mask, out, 0.0)


class ComposedRecommender(Recommender):
    """A recommender made of other recommenders (its *components*).

    Components are attached (`attach`) before `fit` or fitted by `fit` itself; they must
    share the composite's user and item vocabularies. Saved standalone, their state goes
    inline; in a bundle, components that are models of the bundle are stored as references
    (`export_state` with ``siblings``), resolved on load.
    """

    #: Components that a missing attachment is fitted for (subclasses: from the config).
    def component_names(self) -> list[str]:
        """Pipeline names of the components this model needs."""
        raise NotImplementedError

    def _component_params(self, name: str) -> dict[str, Any]:
        return {}

    @classmethod
    def without_components(
        cls, params: dict[str, Any], missing: Sequence[str]
    ) -> dict[str, Any] | None:
        """``params`` for this model without the ``missing`` components, or None.

        None (the default) means the model cannot do without them: a pipeline lacking one
        skips the model. A model whose components are optional (the ranker's retrievers)
        returns its params without them (empty when none would be left).
        """
        return None

    def __init__(self, config: ModelConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.components_: dict[str, Recommender] = {}

    @property
    def needs_history(self) -> bool:  # type: ignore[override]
        """Personalized unless a component answers users without history (popularity)."""
        return all(m.needs_history for m in self.components_.values()) if self.components_ else True

    def recommend(
        self,
        user_ids: Sequence[Any] | NDArray[Any],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        filters: ItemFilter | None = None,
        history: History | None = None,
    ) -> Recommendations:
        """As `Recommender.recommend`, with components proposing unseen candidates.

        When seen items are excluded, each component's top-N skips them too (else it could
        be spent on items the user already has).
        """
        previous = getattr(_CONTEXT, "exclude_seen", True)
        _CONTEXT.exclude_seen = exclude_seen
        try:
            return super().recommend(
                user_ids, k, exclude_seen=exclude_seen, filters=filters, history=history
            )
        finally:
            _CONTEXT.exclude_seen = previous

    def _block_scores(
        self,
        users: NDArray[np.int64],
        history: sp.csr_matrix,
        fold_in: NDArray[np.bool_],
        *,
        exclude_seen: bool,
    ) -> NDArray[np.float32]:
        # Blocks may be scored on worker threads: the context is per thread, so set it here.
        previous = getattr(_CONTEXT, "exclude_seen", True)
        _CONTEXT.exclude_seen = exclude_seen
        try:
            return super()._block_scores(users, history, fold_in, exclude_seen=exclude_seen)
        finally:
            _CONTEXT.exclude_seen = previous

    def attach(self, models: Mapping[str, Recommender]) -> ComposedRecommender:
        """Use these fitted models as components (by pipeline name); returns ``self``."""
        for name in self.component_names():
            if name in models:
                self.components_[name] = models[name]
        return self

    def _fit(self, data: InteractionData) -> None:
        for name in self.component_names():
            model = self.components_.get(name)
            if model is None:
                model = create_model(name, self._component_params(name)).fit(data)
                self.components_[name] = model
            users, items, _ = model._fitted()
            if users != data.users or (
                items != data.items and (items.index(data.items.ids, missing="mask") < 0).any()
            ):
                raise ConfigError(
                    f"{self.name}: component {name!r} was fit on other users/items than the "
                    "hybrid; fit them on the same data"
                )

    def export_state(self, siblings: Mapping[str, Recommender] | None = None) -> dict[str, Any]:
        """As `Recommender.export_state`; components found in ``siblings`` become references."""
        exported = super().export_state()
        refs: dict[str, Any] = {}
        for name, model in self.components_.items():
            sibling = next((n for n, m in (siblings or {}).items() if m is model), None)
            refs[name] = {"ref": sibling} if sibling is not None else model.export_state()
        exported["state"] = {**exported["state"], "components": refs}
        return exported

    def _set_state(self, state: dict[str, Any]) -> None:
        resolve: Callable[[str], Recommender] | None = state.get("_resolve")
        users, items, user_items = self._fitted()
        self.components_ = {}
        for name, entry in state["components"].items():
            if "ref" in entry:
                if resolve is None:
                    raise ConfigError(
                        f"{self.name}: component {name!r} is a reference to "
                        f"{entry['ref']!r}, which is not available here"
                    )
                self.components_[name] = resolve(entry["ref"])
            else:
                self.components_[name] = Recommender.from_state(entry, users, items, user_items)

    def _state(self) -> dict[str, Any]:
        return {}

    def _component_scores(
        self,
        name: str,
        users: NDArray[np.int64],
        history: sp.csr_matrix,
        fold_in: NDArray[np.bool_],
        exclude_seen: bool | None = None,
    ) -> NDArray[np.float32]:
        """Scores of one component with the base class's rules (seen excluded, no history).

        ``exclude_seen`` defaults to the running ``recommend`` call's.
        """
        model = self.components_[name]
        items = self._fitted()[1]
        own_items = model._fitted()[1]
        if exclude_seen is None:
            exclude_seen = running_exclude_seen()
        if own_items == items:
            return model._block_scores(users, history, fold_in, exclude_seen=exclude_seen)
        # A component over a larger item vocabulary (content: the whole catalog): translate
        # the history into its columns, score our items only, and apply the rules in ours.
        cols = self._columns_of(name, own_items)
        history_c = sp.csr_matrix(
            (history.data, cols[history.indices], history.indptr),
            shape=(history.shape[0], len(own_items)),
        )
        scores = model._score_columns(users, history_c, fold_in, cols)
        return model._apply_rules(scores, users, history, fold_in, exclude_seen=exclude_seen)

    def _columns_of(self, name: str, own_items: Vocab) -> NDArray[np.int64]:
        """Where this model's items sit in component ``name``'s item vocabulary (cached)."""
        cache: dict[str, tuple[Vocab, NDArray[np.int64]]] = self.__dict__.setdefault(
            "_columns_cache", {}
        )
        hit = cache.get(name)
        if hit is None or hit[0] is not own_items:
            hit = (own_items, own_items.index(self._fitted()[1].ids))
            cache[name] = hit
        return hit[1]

    def _component_proposal(
        self,
        name: str,
        users: NDArray[np.int64],
        history: sp.csr_matrix,
        fold_in: NDArray[np.bool_],
        *,
        n: int,
        exclude_seen: bool,
    ) -> Proposal:
        """One component's `Proposal` in this model's item columns."""
        model = self.components_[name]
        if model._fitted()[1] == self._fitted()[1]:
            return model._propose(users, history, fold_in, n, exclude_seen=exclude_seen)
        return dense_proposal(
            self._component_scores(name, users, history, fold_in, exclude_seen), n
        )

    def _component_topk(
        self,
        name: str,
        users: NDArray[np.int64],
        history: sp.csr_matrix,
        fold_in: NDArray[np.bool_],
        *,
        k: int,
        exclude_seen: bool,
        allowed: NDArray[np.bool_] | None,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """One component's top ``k`` in this model's item columns (`Recommender._block_topk`)."""
        model = self.components_[name]
        if model._fitted()[1] == self._fitted()[1]:
            return model._block_topk(
                users, history, fold_in, k, exclude_seen=exclude_seen, allowed=allowed
            )
        scores = self._component_scores(name, users, history, fold_in, exclude_seen)
        if allowed is not None:
            scores[:, ~allowed] = -np.inf
        return topk_rows(scores, k)


class HybridConfig(ModelConfig):
    """Hyperparameters of `Hybrid`."""

    #: Component pipeline name → weight (weights are renormalized to sum to 1).
    components: dict[str, float] = Field(default_factory=lambda: {"als": 0.6, "itemknn": 0.4})
    #: Per-model score normalization over the candidate union: minmax | zscore | rank.
    normalization: Normalization = "minmax"
    #: Top-N candidates each component proposes per user.
    candidates: int = Field(default=100, gt=0)
    #: Hyperparameters of components the hybrid fits itself (standalone use).
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> HybridConfig:
        if not self.components:
            raise ValueError("components must name at least one model")
        if any(w < 0 for w in self.components.values()) or sum(self.components.values()) <= 0:
            raise ValueError("weights must be non-negative with a positive sum")
        return self


@register
class Hybrid(ComposedRecommender):
    """Weighted blend of components over the union of their top-N candidates."""

    name = "hybrid"
    Config = HybridConfig
    config: HybridConfig

    def __init__(self, config: ModelConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        #: Known users' candidate unions and normalized parts (`precompute_candidates`).
        self.stored_: dict[str, Any] = {}

    def attach(self, models: Mapping[str, Recommender]) -> ComposedRecommender:
        """As `ComposedRecommender.attach`; stored candidates of other components go."""
        self.stored_ = {}
        return super().attach(models)

    def _fit(self, data: InteractionData) -> None:
        self.stored_ = {}  # computed from the previous fit's data: no longer true
        super()._fit(data)

    def component_names(self) -> list[str]:
        """The weighted components."""
        return list(self.config.components)

    def _component_params(self, name: str) -> dict[str, Any]:
        return dict(self.config.params.get(name, {}))

    @property
    def weights(self) -> dict[str, float]:
        """Component weights, summing to 1."""
        total = sum(self.config.components.values())
        return {k: v / total for k, v in self.config.components.items()}

    def normalized_parts(
        self,
        users: NDArray[np.int64],
        history: sp.csr_matrix,
        fold_in: NDArray[np.bool_],
        exclude_seen: bool | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any], NDArray[np.int64]]:
        """Normalized component scores over the candidate union, and who each answers.

        The union is held per row as item indices (``candidates``, ascending, -1 where a
        row has fewer), so normalization and blending work on n × (components · N) cells,
        not on n × items; components propose without a dense block where they can
        (`Recommender._propose`). Returns per component the normalized scores aligned with
        ``candidates`` and a mask of the rows it answers, plus ``candidates``; none depends
        on the weights (tuning reuses them). ``exclude_seen`` defaults to the running
        ``recommend`` call's.
        """
        if exclude_seen is None:
            exclude_seen = running_exclude_seen()
        if self._stored_rows(users, fold_in, exclude_seen):
            return self._stored_parts(users)
        n = self.config.candidates
        proposals = {
            name: self._component_proposal(
                name, users, history, fold_in, n=n, exclude_seen=exclude_seen
            )
            for name in self.components_
        }
        candidates = candidate_union([p.top for p in proposals.values()])
        valid = candidates >= 0
        parts, answers = {}, {}
        for name, proposal in proposals.items():
            # A row with any finite score has a first proposal (top-k pads only -inf/NaN).
            answers[name] = proposal.top[:, 0] >= 0
            picked = proposal.at(candidates)
            mask = valid & np.isfinite(picked)
            # Candidates ascend by item index, so rank ties break by index as before.
            parts[name] = normalize_scores(picked, mask, self.config.normalization)
        return parts, answers, candidates

    def precompute_candidates(self, max_bytes: int = PRECOMPUTE_BYTES) -> bool:
        """Store every known user's candidate union and normalized component scores.

        What `normalized_parts` computes for a known user with no new history (seen items
        excluded) depends on the training data only: stored, a request for such a user
        reads it instead of having every component score the whole catalog, and blends,
        filters and ranks it as usual (the same answer, to float32 rounding). Users with
        new history, and ``exclude_seen=False``, are computed in full. Nothing is stored
        when the tables could take more than ``max_bytes``. Returns whether it stored them.
        """
        users, items, user_items = self._fitted()
        names = list(self.components_)
        width = min(self.config.candidates * len(names), len(items))
        self.stored_ = {}
        if not names or len(users) * (width * 4 * (1 + len(names)) + len(names)) > max_bytes:
            return False
        union = np.full((len(users), width), -1, np.int32)
        parts = {name: np.zeros((len(users), width), np.float32) for name in names}
        answers = {name: np.zeros(len(users), bool) for name in names}

        def run(start: int) -> None:
            idx = np.arange(start, min(start + block, len(users)))
            hist = _training_rows(user_items, idx).astype(np.float32)
            got, said, cands = self.normalized_parts(
                idx, hist, np.zeros(idx.size, dtype=bool), exclude_seen=True
            )
            # Candidates ascend with -1 (none) first: keep each row's valid ones, in order.
            order = np.argsort(cands < 0, axis=1, kind="stable")[:, :width]
            union[idx] = np.take_along_axis(cands, order, axis=1)
            for name in names:
                parts[name][idx] = np.take_along_axis(got[name], order, axis=1)
                answers[name][idx] = said[name]

        block = max(1, topk.BLOCK_CELLS // max(len(items), 1))
        for_blocks(len(users), block, run)
        self.stored_ = {"union": union, "parts": parts, "answers": answers}
        return True

    def _stored_rows(
        self, users: NDArray[np.int64], fold_in: NDArray[np.bool_], exclude_seen: bool
    ) -> bool:
        """Whether every row is a known user answered from the stored tables."""
        if not self.stored_ or not exclude_seen or fold_in.any() or users.size == 0:
            return False
        return bool(users.min() >= 0 and users.max() < self.stored_["union"].shape[0])

    def _stored_parts(
        self, users: NDArray[np.int64]
    ) -> tuple[dict[str, Any], dict[str, Any], NDArray[np.int64]]:
        """`normalized_parts` of known users, read from `precompute_candidates`' tables."""
        stored = self.stored_
        parts = {n: np.asarray(p[users], np.float64) for n, p in stored["parts"].items()}
        answers = {n: np.asarray(a[users], bool) for n, a in stored["answers"].items()}
        return parts, answers, np.asarray(stored["union"][users], np.int64)

    def _state(self) -> dict[str, Any]:
        return {"stored": self.stored_} if self.stored_ else {}

    def _set_state(self, state: dict[str, Any]) -> None:
        super()._set_state(state)
        self.stored_ = dict(state.get("stored") or {})

    def _score(
        self, users: NDArray[np.int64], history: sp.csr_matrix, fold_in: NDArray[np.bool_]
    ) -> NDArray[np.float32]:
        parts, answers, candidates = self.normalized_parts(users, history, fold_in)
        return blend(parts, answers, candidates, self.weights, len(self._fitted()[1]))

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
        # Ranked over the candidate union itself: no dense users × items block.
        parts, answers, candidates = self.normalized_parts(users, history, fold_in, exclude_seen)
        values = blend_candidates(parts, answers, candidates, self.weights)
        return top_of_candidates(candidates, values, k, allowed)

    def _similar_scores(self, items: NDArray[np.int64]) -> NDArray[np.float32]:
        total = np.zeros((items.size, len(self._fitted()[1])), np.float64)
        failed = []
        for name, w in self.weights.items():
            try:
                s = np.asarray(_similar_in(self, self.components_[name], items), np.float64)
            except HybridrecError as exc:
                failed.append(f"{name}: {exc}")
                continue
            mask = np.isfinite(s)
            mask[np.arange(items.size), items] = False
            total += w * normalize_scores(s, mask, "minmax")
        if len(failed) == len(self.weights):
            raise HybridrecError(
                f"model {self.name!r}: no component supports similar_items ({'; '.join(failed)})"
            )
        return total.astype(np.float32)


def candidate_union(tops: Sequence[NDArray[np.int64]]) -> NDArray[np.int64]:
    """Per row, the union of the top lists: item indices ascending, -1 for each repeat."""
    union = np.sort(np.concatenate(list(tops), axis=1), axis=1)
    union[:, 1:][union[:, 1:] == union[:, :-1]] = -1
    return union


def top_of_candidates(
    candidates: NDArray[np.int64],
    values: NDArray[Any],
    k: int,
    allowed: NDArray[np.bool_] | None,
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """The top ``k`` item indices of each row by ``values`` over its ``candidates``.

    ``candidates`` ascend by item index (-1: none), so ties by position are ties by index.
    """
    if allowed is not None:
        values[~allowed[np.maximum(candidates, 0)]] = -np.inf
    pos, val = topk_rows(values, k)
    top = np.where(pos >= 0, np.take_along_axis(candidates, np.maximum(pos, 0), axis=1), -1)
    return top, val


def _similar_in(
    model: Recommender, component: Recommender, items: NDArray[np.int64]
) -> NDArray[np.float32]:
    """A component's item similarities in ``model``'s columns.

    A component over a larger item vocabulary (content: the whole catalog) is asked about
    its own indices of the query items and answers in its columns, which are mapped back.
    """
    own, mine = component._fitted()[1], model._fitted()[1]
    if own == mine:
        return component._similar_scores(items)
    cols = own.index(mine.ids)
    return np.asarray(component._similar_scores(cols[items]), np.float32)[:, cols]


def blend_candidates(
    parts: Mapping[str, NDArray[np.float64]],
    answers: Mapping[str, NDArray[np.bool_]],
    candidates: NDArray[np.int64],
    weights: Mapping[str, float],
) -> NDArray[np.float32]:
    """Weighted sum of normalized parts aligned with ``candidates`` (-inf off the union).

    Rows renormalize over the components answering them; ``parts`` are aligned with
    ``candidates`` (item indices per row, -1 for none), as `Hybrid.normalized_parts` makes.
    """
    total = np.zeros(candidates.shape, np.float64)
    mass = np.zeros(candidates.shape[0], np.float64)
    for name, part in parts.items():
        w = weights.get(name, 0.0)
        if w <= 0:
            continue
        total += w * part * answers[name][:, None]
        mass += w * answers[name]
    out = (total / np.where(mass > 0, mass, 1.0)[:, None]).astype(np.float32)
    out[(candidates < 0) | (mass <= 0)[:, None]] = -np.inf
    return out


def blend(
    parts: Mapping[str, NDArray[np.float64]],
    answers: Mapping[str, NDArray[np.bool_]],
    candidates: NDArray[np.int64],
    weights: Mapping[str, float],
    n_items: int,
) -> NDArray[np.float32]:
    """`blend_candidates` as dense n × ``n_items`` scores (-inf off the union)."""
    values = blend_candidates(parts, answers, candidates, weights)
    out = np.full((candidates.shape[0], n_items), -np.inf, np.float32)
    rows, cols = np.nonzero(np.isfinite(values))
    out[rows, candidates[rows, cols]] = values[rows, cols]
    return out


def mixed(als: Recommender, popularity: Recommender, alpha: float) -> Hybrid:
    """ALS blended with popularity: ``alpha`` is the ALS weight (1 = ALS only)."""
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be between 0 and 1 (got {alpha})")
    weights = {"als": alpha, "popularity": 1.0 - alpha}
    hybrid = Hybrid(components={k: v for k, v in weights.items() if v > 0} or {"als": 1.0})
    hybrid.attach({"als": als, "popularity": popularity})
    users, items, user_items = als._fitted()
    hybrid.users_, hybrid.items_, hybrid.user_items_ = users, items, user_items
    return hybrid


def simplex_grid(n: int, step: float = 0.1) -> list[tuple[float, ...]]:
    """Every weight vector of ``n`` non-negative multiples of ``step`` summing to 1."""
    units = round(1 / step)
    return [
        tuple(c / units for c in combo)
        for combo in itertools.product(range(units + 1), repeat=n)
        if sum(combo) == units
    ]


def tune_weights(
    hybrid: Hybrid,
    evaluate: Callable[[Recommender], float],
    *,
    step: float = 0.1,
) -> tuple[dict[str, float], list[tuple[dict[str, float], float]]]:
    """Search the weight simplex; ``evaluate`` scores a hybrid (e.g. NDCG@10 on valid).

    Component scores are computed once and cached (they do not depend on the weights),
    so each grid point costs a weighted sum and a top-k.

    Returns:
        The best weights and every trial.
    """
    names = hybrid.component_names()
    cache: dict[tuple[bytes, bytes, bool], Any] = {}
    original = hybrid.normalized_parts

    def cached(users: Any, history: Any, fold_in: Any, exclude_seen: bool | None = None) -> Any:
        if exclude_seen is None:
            exclude_seen = running_exclude_seen()
        key = (np.asarray(users).tobytes(), np.asarray(history.indptr).tobytes(), exclude_seen)
        if key not in cache:
            cache[key] = original(users, history, fold_in, exclude_seen)
        return cache[key]

    trials: list[tuple[dict[str, float], float]] = []
    hybrid.normalized_parts = cached  # type: ignore[method-assign]
    try:
        for combo in simplex_grid(len(names), step):
            weights = dict(zip(names, combo, strict=True))
            if sum(weights.values()) <= 0:
                continue
            hybrid.config = hybrid.config.model_copy(update={"components": weights})
            trials.append((weights, evaluate(hybrid)))
    finally:
        del hybrid.normalized_parts
    best = max(trials, key=lambda t: t[1])[0]
    hybrid.config = hybrid.config.model_copy(update={"components": best})
    return best, trials


class RouterConfig(ModelConfig):
    """Hyperparameters of `Router`."""

    #: Users with fewer training interactions are cold.
    cold_below: int = Field(default=5, ge=1)
    #: Users with at least this many are hot (between: warm).
    hot_from: int = Field(default=20, ge=2)
    #: Component (pipeline name) per segment.
    cold: str = "content"
    warm: str = "als"
    hot: str = "hybrid"
    #: Hyperparameters of components the router fits itself (standalone use).
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> RouterConfig:
        if self.hot_from <= self.cold_below:
            raise ValueError("hot_from must be greater than cold_below")
        return self


@register
class Router(ComposedRecommender):
    """Answers each user with the component of their segment (by history length)."""

    name = "router"
    Config = RouterConfig
    config: RouterConfig
    SEGMENTS: ClassVar[tuple[str, ...]] = ("cold", "warm", "hot")

    def component_names(self) -> list[str]:
        """The components of the three segments."""
        c = self.config
        return list(dict.fromkeys([c.cold, c.warm, c.hot]))

    def _component_params(self, name: str) -> dict[str, Any]:
        return dict(self.config.params.get(name, {}))

    def segment_of(self, lengths: NDArray[np.int64]) -> NDArray[np.str_]:
        """Segment name per history length."""
        c = self.config
        return np.where(
            lengths < c.cold_below, "cold", np.where(lengths >= c.hot_from, "hot", "warm")
        )

    def route(self, lengths: NDArray[np.int64]) -> NDArray[np.object_]:
        """Component name per history length."""
        c = self.config
        by = {"cold": c.cold, "warm": c.warm, "hot": c.hot}
        return np.asarray([by[s] for s in self.segment_of(lengths)], dtype=object)

    def routes_for(
        self, user_ids: Sequence[Any] | NDArray[Any], history: History | None = None
    ) -> list[str]:
        """The component `recommend` routes each user to (same ids and history rules)."""
        if not history:
            users, _, user_items = self._fitted()
            idx = users.index(users.coerce(np.asarray(user_ids).ravel()), missing="mask")
            if (idx >= 0).all():
                # Known users' training history lengths: no rows to build.
                lengths = user_items.indptr[idx + 1] - user_items.indptr[idx]
                return [str(r) for r in self.route(np.asarray(lengths, np.int64))]
        _, _, rows, _ = self._histories(user_ids, history)
        return [str(r) for r in self.route(np.diff(rows.indptr))]

    def _score(
        self, users: NDArray[np.int64], history: sp.csr_matrix, fold_in: NDArray[np.bool_]
    ) -> NDArray[np.float32]:
        routes = self.route(np.diff(history.indptr))
        out = np.full((users.size, len(self._fitted()[1])), -np.inf, np.float32)
        for name in dict.fromkeys(routes.tolist()):
            rows = np.flatnonzero(routes == name)
            out[rows] = self._component_scores(name, users[rows], history[rows], fold_in[rows])
        return out

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
        # Each route's rows are ranked by its component the way it ranks its own.
        routes = self.route(np.diff(history.indptr))
        k = min(k, max(len(self._fitted()[1]), 1))
        top = np.full((users.size, k), -1, np.int64)
        val = np.full((users.size, k), -np.inf, np.float32)
        for name in dict.fromkeys(routes.tolist()):
            rows = np.flatnonzero(routes == name)
            # One route for the whole block (a request's one user): no row selection.
            whole = rows.size == users.size
            got, got_val = self._component_topk(
                name,
                users if whole else users[rows],
                history if whole else history[rows],
                fold_in if whole else fold_in[rows],
                k=k,
                exclude_seen=exclude_seen,
                allowed=allowed,
            )
            top[rows, : got.shape[1]], val[rows, : got.shape[1]] = got, got_val
        return top, val

    def _similar_scores(self, items: NDArray[np.int64]) -> NDArray[np.float32]:
        # Item similarity has no user segment: the first component (warm, hot, then cold:
        # the collaborative ones first) that supports it answers.
        c = self.config
        failed = []
        for name in dict.fromkeys([c.warm, c.hot, c.cold]):
            try:
                return _similar_in(self, self.components_[name], items)
            except HybridrecError as exc:
                failed.append(f"{name}: {exc}")
        raise HybridrecError(
            f"model {self.name!r}: no component supports similar_items ({'; '.join(failed)})"
        )


def component_order(names: Sequence[str], available: Sequence[str]) -> list[str]:
    """``names`` that are in ``available``, in order, without repeats."""
    return [n for n in dict.fromkeys(names) if n in available]
