"""Translation between the service and the one answer path, `hybridrec.models.explain.answer`.

The HTTP routes never pick models, walk a chain or write reasons: `recommend` turns a request
(a user id as text, the online history, the rules) into one call of the library's `answer` —
the same function ``hybridrec recommend`` calls — over the served bundle's models
(`Bundle.get` is the model provider), and turns its answer into `ScoredItem` rows for the
response. Strategy choice, the fallback chain (hybrid → ALS → two-tower → content →
popular), business rules, MMR and reasons all live in the library.

A user with no history at all (unknown and no events) takes the cold-start path and
``method_used`` says `COLD_START`. `similar` answers item-to-item similarity (there is no
library function for it yet; the CLI's ``similar`` asks one model).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from hybridrec.bundle import Bundle
from hybridrec.errors import ConfigError, HybridrecError, UnknownIdError
from hybridrec.models.explain import CHAIN, Rules
from hybridrec.models.explain import answer as library_answer

__all__ = [
    "COLD_START",
    "Answer",
    "ScoredItem",
    "SimilarMethod",
    "Strategy",
    "recommend",
    "resolve_model",
    "similar",
]

log = logging.getLogger(__name__)

#: ``method_used`` of the cold-start path.
COLD_START = "cold_start:popular"


class Strategy(StrEnum):
    """Strategies a client may ask for (every name is valid; missing models fall back)."""

    auto = "auto"
    hybrid = "hybrid"
    als = "als"
    content = "content"
    two_tower = "two_tower"
    ranked = "ranked"
    popular = "popular"
    mixed = "mixed"


class SimilarMethod(StrEnum):
    """How item similarity is computed."""

    cf = "cf"
    content = "content"
    hybrid = "hybrid"


#: Method → registered model classes (or bundle model names) that implement it, best first.
METHOD_MODELS: dict[str, tuple[str, ...]] = {
    "als": ("als",),
    "content": ("content",),
    "itemknn": ("itemknn",),
    "ease": ("ease",),
}

#: Models that answer item-to-item similarity from interactions, best first.
_CF_SIMILAR = ("itemknn", "als", "ease")


@dataclass(frozen=True)
class ScoredItem:
    """One recommended item.

    Attributes:
        item_id: External item id (as the model's vocabulary has it).
        score: The score of the method that produced it (scores of different methods are
            not comparable; the rank is what counts).
        method: The model that produced it (``als``, ``popularity``, ``router→hybrid``...).
        reasons: Why it is recommended, in words.
    """

    item_id: Any
    score: float
    method: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Answer:
    """A ranked answer and how it came about.

    Attributes:
        items: Best first, at most ``k``.
        method_used: The models that answered, ``+``-joined when several filled the list
            (``als+popularity``), or `COLD_START`.
        cold_start: The user had no history at all (unknown, no events).
        fallback: Items came from a model other than the first one of the strategy.
        history_items: Items of the history used (training plus online).
        notes: What was skipped and why (missing models, errors, short lists).
    """

    items: list[ScoredItem]
    method_used: str
    cold_start: bool = False
    fallback: bool = False
    history_items: int = 0
    notes: list[str] = field(default_factory=list)


def resolve_model(bundle: Bundle, method: str) -> str | None:
    """The bundle's model name implementing ``method`` (by model name, then class), if any."""
    wanted = METHOD_MODELS.get(method, (method,))
    names = bundle.model_names
    for candidate in wanted:
        if candidate in names:
            return candidate
    models = bundle.manifest.get("models", {})
    for candidate in wanted:
        for name in names:
            if models.get(name, {}).get("model") == candidate:
                return name
    return None


def recommend(
    bundle: Bundle,
    user_id: str,
    k: int,
    strategy: Strategy | str = Strategy.auto,
    *,
    alpha: float = 0.8,
    rules: Rules | None = None,
    history: Mapping[str, float] | None = None,
    explain: bool = True,
    model: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Answer:
    """Recommend ``k`` items to one user through the library's `answer`.

    Args:
        bundle: The bundle to answer from (hold one reference for the whole request).
        user_id: The user's external id, as text (converted to the vocabulary's type).
        k: How many items (at most; filters or a small catalog may leave fewer).
        strategy: A `Strategy` name.
        alpha: ``mixed`` only: weight of ALS against popularity, in [0, 1].
        rules: Business rules; item ids given as text are converted like ``user_id``.
        history: Item id → weight of interactions since training (fold-in); for an unknown
            user, their whole history.
        explain: Attach reasons.
        model: Ask this model of the version first (the CLI's ``--model``), then the chain.
        attributes: The user's attributes (a visitor's), for a two-tower with user features.

    Returns:
        The `Answer`; never raises for an unknown user (cold-start path).

    Raises:
        ConfigError: ``model`` is not a model of this version.
    """
    if model is not None and model not in bundle.model_names:
        raise ConfigError(
            f"no model {model!r} in version {bundle.version}; "
            f"available: {', '.join(bundle.model_names)}"
        )
    base = bundle.model()
    users, items, _ = base._fitted()
    uid = _py(users.coerce(np.asarray([user_id]))[0])
    rules = rules or Rules()
    if rules.allow is not None or rules.deny:
        rules = Rules(
            exclude_seen=rules.exclude_seen,
            include_categories=rules.include_categories,
            exclude_categories=rules.exclude_categories,
            allow=None if rules.allow is None else _item_ids(items, rules.allow),
            deny=_item_ids(items, rules.deny or ()) or None,
            min_popularity=rules.min_popularity,
            mmr_lambda=rules.mmr_lambda,
        )
    result = library_answer(
        bundle.get,
        [uid],
        k,
        strategy=str(strategy),
        alpha=alpha,
        rules=rules,
        history={uid: dict(history)} if history else None,
        items_table=bundle.items,
        chain=CHAIN,
        explain=explain,
        first=model,
        attributes={uid: dict(attributes)} if attributes else None,
    )[0]
    reasons = result.reasons or [[] for _ in result.items]
    scored = [
        ScoredItem(_py(item), score, method, tuple(r.text for r in why))
        for item, score, method, why in zip(
            result.items, result.scores, result.methods, reasons, strict=True
        )
    ]
    return Answer(
        scored,
        COLD_START if result.cold_start else result.method_used,
        cold_start=result.cold_start,
        fallback=result.fallback or result.cold_start,
        history_items=result.history_items,
        notes=list(dict.fromkeys(result.notes)),
    )


def _item_ids(items: Any, ids: Sequence[Any]) -> list[Any]:
    return [_py(v) for v in items.coerce(np.asarray([str(i) for i in ids], dtype=object))]


def _normalized(ids: list[Any], scores: list[float]) -> dict[Any, float]:
    if not ids:
        return {}
    arr = np.asarray(scores, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    norm = np.ones_like(arr) if hi <= lo else (arr - lo) / (hi - lo)
    return dict(zip(ids, norm.tolist(), strict=True))


# ---- similar items --------------------------------------------------------------------------


def similar(
    bundle: Bundle, item_id: str, k: int, method: SimilarMethod | str = SimilarMethod.cf
) -> Answer:
    """The ``k`` items most similar to ``item_id``.

    ``cf`` uses the first of item-kNN, ALS, EASE in the bundle that knows the item;
    ``content`` the content model; ``hybrid`` blends the two (min-max normalized, equal
    weights). A method the bundle cannot serve falls back to the other.

    Raises:
        UnknownIdError: No model of the bundle knows the item.
    """
    method = SimilarMethod(method)
    notes: list[str] = []
    cf = _similar_cf(bundle, item_id, k, notes)
    content = None
    if method is not SimilarMethod.cf or cf is None:
        content = _similar_model(bundle, "content", item_id, k, notes)
    if method is SimilarMethod.cf and cf is None and content is not None:
        notes.append("cf cannot answer for this item: content similarity instead")
    if method is SimilarMethod.content and content is None and cf is not None:
        notes.append("content cannot answer for this item: cf similarity instead")
    if cf is None and content is None:
        raise UnknownIdError("item", [item_id], hint="no model of this version knows it")
    if method is SimilarMethod.hybrid and cf is not None and content is not None:
        a, b = _normalized(*cf[1]), _normalized(*content[1])
        blended = {i: 0.5 * a.get(i, 0.0) + 0.5 * b.get(i, 0.0) for i in a.keys() | b.keys()}
        top = sorted(blended.items(), key=lambda kv: (-kv[1], str(kv[0])))[:k]
        reason = (f"similar by interactions ({cf[0]}) and by content",)
        items = [ScoredItem(i, s, "hybrid", reason) for i, s in top]
        return Answer(items, f"hybrid:{cf[0]}+content", notes=notes)
    preferred = content if method is SimilarMethod.content else cf
    chosen = preferred or cf or content
    assert chosen is not None
    name, (ids, scores) = chosen
    if name == "content":
        reason = ("similar in content (title, categories, tags)",)
    else:
        reason = (f"people who interacted with it also chose this ({name})",)
    items = [ScoredItem(i, s, name, reason) for i, s in list(zip(ids, scores, strict=True))[:k]]
    fallback = preferred is None or (method is SimilarMethod.hybrid)
    return Answer(items, name, fallback=fallback, notes=notes)


def _similar_model(
    bundle: Bundle, method: str, item_id: str, k: int, notes: list[str]
) -> tuple[str, tuple[list[Any], list[float]]] | None:
    name = resolve_model(bundle, method)
    if name is None:
        notes.append(f"{method}: not in this model version")
        return None
    try:
        recs = bundle.model(name).similar_items(np.asarray([item_id], dtype=object), k)
    except UnknownIdError:
        notes.append(f"{method}: unknown item")
        return None
    except HybridrecError as exc:
        notes.append(f"{method}: {exc}")
        return None
    ids, scores = recs.row(0)
    return method, ([_py(i) for i in ids], [float(s) for s in scores])


def _similar_cf(
    bundle: Bundle, item_id: str, k: int, notes: list[str]
) -> tuple[str, tuple[list[Any], list[float]]] | None:
    for method in _CF_SIMILAR:
        if resolve_model(bundle, method) is None:
            continue
        found = _similar_model(bundle, method, item_id, k, notes)
        if found is not None:
            return found
    return None


def _py(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
