"""Every recommendation strategy of the service, behind one seam: `answer` (and `similar`).

The HTTP layer never picks models itself: it hands a strategy name to `answer` and gets back
the ranked items, the method that produced each one, human-readable reasons and the method
that answered overall (``method_used``). Routing, blending and fallbacks live here, so the
hybrid library (router, fallback chain, explanations) can replace the body of `answer` without
touching a route.

What is implemented now, with the models a bundle has:

- ``als``, ``content``, ``popular``: that model first; when the bundle lacks it, it raises, or
  it returns fewer than ``k`` items, the rest comes from the fallback chain.
- ``auto``, ``hybrid``, ``two_tower``, ``ranked``: a model of that kind when the bundle has
  one (``auto``: the router, then the hybrid), then the chain ALS → content → popular.
- ``mixed``: ALS and popularity candidate lists, each min-max normalized over its own list
  (an item missing from a list counts 0 there), blended as ``alpha * als + (1 - alpha) *
  popularity``.
- A user no model knows and with no history takes the cold-start path (popularity), and
  ``method_used`` says ``cold_start:popular``. A user with new history is folded in.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from hybridrec.bundle import Bundle
from hybridrec.errors import HybridrecError, UnknownIdError
from hybridrec.models.base import ItemFilter, Recommender, topk_rows

__all__ = [
    "COLD_START",
    "Answer",
    "ScoredItem",
    "SimilarMethod",
    "Strategy",
    "answer",
    "is_known_user",
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
    "popular": ("popularity",),
    "content": ("content",),
    "hybrid": ("hybrid",),
    "router": ("router",),
    "two_tower": ("two_tower",),
    "ranked": ("ranked", "ranker"),
    "itemknn": ("itemknn",),
    "ease": ("ease",),
}

_TAIL = ("als", "content", "popular")
#: Strategy → methods tried in order.
CHAINS: dict[Strategy, tuple[str, ...]] = {
    # auto: the router (by history length) when the version has one, else the hybrid.
    Strategy.auto: ("router", "hybrid", *_TAIL),
    Strategy.hybrid: ("hybrid", *_TAIL),
    Strategy.two_tower: ("two_tower", *_TAIL),
    Strategy.ranked: ("ranked", *_TAIL),
    Strategy.als: _TAIL,
    Strategy.content: ("content", "als", "popular"),
    Strategy.popular: ("popular",),
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
        method: The method that produced it (``als``, ``popular``, ``content``, ``mixed``...).
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
        method_used: The method that answered, ``+``-joined when several filled the list
            (``als+popular``), or `COLD_START`.
        cold_start: The user was unknown to the models and had no history.
        fallback: Items came from a method other than the first one of the strategy.
        notes: What was skipped and why (missing models, errors, short lists).
    """

    items: list[ScoredItem]
    method_used: str
    cold_start: bool = False
    fallback: bool = False
    notes: list[str] = field(default_factory=list)


# ---- model lookup ---------------------------------------------------------------------------


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


def is_known_user(bundle: Bundle, user_id: str) -> bool:
    """Whether the bundle's default model learned from ``user_id``."""
    users = bundle.model().users_
    return users is not None and user_id in users


# ---- recommend ------------------------------------------------------------------------------


def answer(
    bundle: Bundle,
    user_id: str,
    k: int,
    strategy: Strategy | str = Strategy.auto,
    *,
    alpha: float = 0.8,
    exclude_seen: bool = True,
    filters: ItemFilter | None = None,
    history: Mapping[Any, float] | None = None,
) -> Answer:
    """Recommend ``k`` items to one user with ``strategy``.

    Args:
        bundle: The bundle to answer from (hold one reference for the whole request).
        user_id: The user's external id, as text.
        k: How many items (at most; filters or a small catalog may leave fewer).
        strategy: A `Strategy` name.
        alpha: ``mixed`` only: weight of ALS against popularity, in [0, 1].
        exclude_seen: Drop items in the user's training history and in ``history``.
        filters: Allowed / denied items (category, dislikes).
        history: Item id → weight of interactions since training (fold-in); for an unknown
            user, their whole history.

    Returns:
        The `Answer`; never raises for an unknown user (cold-start path).
    """
    strategy = Strategy(strategy)
    hist = dict(history or {})
    known = is_known_user(bundle, user_id)
    # An unknown user is folded in from ``history``; with none, there is nothing to
    # personalise on and every model gets an empty history (popularity still answers).
    fold = {user_id: hist} if (hist or not known) else None
    ask = _Ask(user_id, exclude_seen, filters, fold)
    if not known and not hist:
        items, used, notes = _chain(bundle, ask, k, ("popular",))
        notes.insert(0, "unknown user with no history: cold-start path")
        return Answer(items, COLD_START, cold_start=True, fallback=True, notes=notes)
    if strategy is Strategy.mixed:
        return _mixed(bundle, ask, k, alpha)
    chain = CHAINS[strategy]
    items, used, notes = _chain(bundle, ask, k, chain)
    if not known:
        notes.insert(0, f"new user folded in from {len(hist)} interactions")
    fallback = any(item.method != chain[0] for item in items) or not items
    return Answer(items, "+".join(used) or "none", fallback=fallback, notes=notes)


def _reasons(method: str, history_items: int) -> tuple[str, ...]:
    if method == "popular":
        return ("popular overall",)
    if method == "content":
        return ("similar in content to items you interacted with",)
    if method in ("als", "itemknn", "ease"):
        base = f"recommended by {method}: people with similar histories chose it"
        if history_items:
            return (base, f"includes your {history_items} recent interactions")
        return (base,)
    return (f"recommended by {method}",)


@dataclass(frozen=True)
class _Ask:
    """One user's request, as every model of a chain is asked it."""

    user_id: str
    exclude_seen: bool
    filters: ItemFilter | None
    fold: Mapping[Any, Any] | None


def _rows(bundle: Bundle, name: str, ask: _Ask, k: int) -> tuple[list[Any], list[float]]:
    if ask.fold is None and ask.filters is None and not _has_top_n(bundle, name, k):
        fast = _factor_rows(bundle.model(name), ask.user_id, k, ask.exclude_seen)
        if fast is not None:
            return fast
    recs = bundle.recommend(
        np.asarray([ask.user_id], dtype=object),
        k,
        model=name,
        exclude_seen=ask.exclude_seen,
        filters=ask.filters,
        history=ask.fold,
    )
    ids, scores = recs.row(0)
    return [_py(i) for i in ids], [float(s) for s in scores]


def _has_top_n(bundle: Bundle, name: str, k: int) -> bool:
    top = bundle.manifest.get("bundle", {}).get("top_n")
    return bool(top) and top.get("model") == name and k <= int(top.get("k", 0))


def _factor_rows(
    model: Recommender, user_id: str, k: int, exclude_seen: bool
) -> tuple[list[Any], list[float]] | None:
    """A known user of a factor model, with no new history and no filters: one dot product.

    The general `Recommender.recommend` builds sparse history rows for every call, which
    costs more than the scoring itself for one user. Same scores, exclusion and tie rules
    (`topk_rows`), so the answer is identical (tested); None when it does not apply.
    """
    user_factors = getattr(model, "user_factors_", None)
    item_factors = getattr(model, "item_factors_", None)
    users, items, seen = model.users_, model.items_, model.user_items_
    if (
        model.name != "als"
        or not isinstance(user_factors, np.ndarray)
        or not isinstance(item_factors, np.ndarray)
        or users is None
        or items is None
        or seen is None
    ):
        return None
    u = int(users.index(np.asarray([user_id], dtype=object), missing="mask")[0])
    if u < 0:
        return None
    scores = np.asarray(item_factors @ user_factors[u], dtype=np.float32)[None, :]
    if exclude_seen:
        scores[0, seen.indices[seen.indptr[u] : seen.indptr[u + 1]]] = -np.inf
    idx, val = topk_rows(scores, k)
    keep = idx[0] >= 0
    return [_py(i) for i in items.lookup(idx[0][keep])], [float(s) for s in val[0][keep]]


def _chain(
    bundle: Bundle, ask: _Ask, k: int, chain: Sequence[str]
) -> tuple[list[ScoredItem], list[str], list[str]]:
    """Fill ``k`` items from the methods of ``chain`` in order; which ones did, and notes."""
    out: list[ScoredItem] = []
    taken: set[Any] = set()
    used: list[str] = []
    notes: list[str] = []
    history_items = len(ask.fold.get(ask.user_id, {})) if ask.fold else 0
    for method in dict.fromkeys(chain):
        name = resolve_model(bundle, method)
        if name is None:
            notes.append(f"{method}: not in this model version")
            continue
        try:
            ids, scores = _rows(bundle, name, ask, k + len(taken))
        except HybridrecError as exc:
            notes.append(f"{method}: {exc}")
            continue
        reasons = _reasons(method, history_items)
        added = 0
        for item, score in zip(ids, scores, strict=True):
            if len(out) >= k:
                break
            if item in taken:
                continue
            taken.add(item)
            out.append(ScoredItem(item, score, method, reasons))
            added += 1
        if added:
            used.append(method)
        if len(out) >= k:
            break
        notes.append(f"{method}: {added} items, {k - len(out)} short")
    return out, used, notes


def _normalized(ids: list[Any], scores: list[float]) -> dict[Any, float]:
    if not ids:
        return {}
    arr = np.asarray(scores, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    norm = np.ones_like(arr) if hi <= lo else (arr - lo) / (hi - lo)
    return dict(zip(ids, norm.tolist(), strict=True))


def _mixed(bundle: Bundle, ask: _Ask, k: int, alpha: float) -> Answer:
    notes: list[str] = []
    pool = max(200, 10 * k)
    parts: dict[str, dict[Any, float]] = {}
    for method in ("als", "popular"):
        name = resolve_model(bundle, method)
        if name is None:
            notes.append(f"{method}: not in this model version")
            continue
        try:
            parts[method] = _normalized(*_rows(bundle, name, ask, pool))
        except HybridrecError as exc:
            notes.append(f"{method}: {exc}")
    als, pop = parts.get("als", {}), parts.get("popular", {})
    if not als:
        notes.append("als gave nothing: popularity alone")
        items = sorted(pop.items(), key=lambda kv: -kv[1])[:k]
        reasons = ("popular overall",)
        return Answer(
            [ScoredItem(i, s, "popular", reasons) for i, s in items],
            "popular" if items else "none",
            fallback=True,
            notes=notes,
        )
    blended = {
        item: alpha * als.get(item, 0.0) + (1.0 - alpha) * pop.get(item, 0.0)
        for item in als.keys() | pop.keys()
    }
    top = sorted(blended.items(), key=lambda kv: (-kv[1], str(kv[0])))[:k]
    out = [
        ScoredItem(
            item,
            score,
            "mixed",
            (
                f"blend of als ({als.get(item, 0.0):.2f}) and popularity "
                f"({pop.get(item, 0.0):.2f}) with alpha {alpha:g}",
            ),
        )
        for item, score in top
    ]
    return Answer(out, "mixed", notes=notes)


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
