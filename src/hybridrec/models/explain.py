"""Answering a request: strategies, the fallback chain, business rules and reasons.

`answer` is THE answer path: the CLI (``hybridrec recommend``), the HTTP routes (through
`hybridrec.serving.strategies`, which only translates ids and online history) and the UI
(through the API) all call it, so they give identical items, methods and reasons. It
picks the first model for the requested strategy (``auto`` is the router, ``mixed`` blends
ALS with popularity by ``alpha``), then walks the fallback chain — hybrid → ALS →
two-tower → content → popular — passing over any model that is missing, fails, or returns
fewer than k items, and filling the rest from the next. Every item says which model
produced it, and carries at least one human-readable reason with its evidence:

- "because you liked <title>": the item of the user's history most similar to it (ALS factor
  cosine, else item-kNN similarity, else EASE weights);
- "similar in content to <title>": the same, by content embeddings;
- "popular in <genre>" / "popular overall": for popularity answers (and as the last word
  when nothing in the history relates).

Every item's ``method`` names the model that produced it; a router answer names its route
(``router→hybrid``). ``history_items`` counts the whole history the answer used (training
history plus the new history given), and a user with none takes the cold-start path.

Business rules: exclude seen (default), include/exclude categories (case-insensitive),
allow/deny lists, a minimum popularity, and MMR diversity re-ranking with a lambda.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray

from hybridrec.data.vocab import Vocab
from hybridrec.errors import ConfigError, HybridrecError
from hybridrec.models.base import History, ItemFilter, Recommender
from hybridrec.models.hybrid import Router, mixed

__all__ = [
    "CHAIN",
    "STRATEGIES",
    "STRATEGY_NAMES",
    "UNKNOWN_POLICIES",
    "Answer",
    "Batch",
    "Reason",
    "Rules",
    "answer",
    "answer_batch",
    "answers_frame",
    "batch_reasons",
]

log = logging.getLogger(__name__)

#: The fallback chain, best first; `popularity` answers everyone.
CHAIN = ("hybrid", "als", "two_tower", "content", "popularity")
#: Strategy → the model asked first (then the chain).
STRATEGIES = {
    "auto": "router",
    "hybrid": "hybrid",
    "als": "als",
    "content": "content",
    "two_tower": "two_tower",
    "ranked": "ranked",
    "popular": "popularity",
    "mixed": "mixed",
}
STRATEGY_NAMES = tuple(STRATEGIES)
# ALS factor cosine first: a dense 80x10 product per request, where slicing the sparse
# item-kNN matrix costs ~0.5 ms (the service answers ALS requests in about 1 ms).
_CF_SIMILARITY = ("als", "itemknn", "ease")


@dataclass(frozen=True)
class Reason:
    """Why an item is recommended, with the evidence."""

    text: str
    kind: str
    evidence: dict[str, Any] = field(default_factory=dict)


#: Separates a router from the route that answered in a method name (``router→als``).
ROUTE_SEP = "→"


@dataclass
class Answer:
    """One user's recommendations with their provenance and reasons.

    Attributes:
        user_id: The user asked for.
        items: Recommended item ids, best first.
        scores: Each item's score by the model that produced it (not comparable across
            models: the rank is what counts).
        methods: The model that produced each item (``router→hybrid`` for a route).
        reasons: Why each item is recommended, with evidence (when asked for).
        history_items: Items of the history the answer used (training plus new).
        first: The model the strategy asked first.
        notes: What was skipped on the way and why (missing models, errors, short lists).
    """

    user_id: Any
    items: list[Any] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    reasons: list[list[Reason]] = field(default_factory=list)
    history_items: int = 0
    first: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def method_used(self) -> str:
        """The models that answered, in order ("als", or "hybrid+popularity")."""
        return "+".join(dict.fromkeys(self.methods)) or "none"

    @property
    def cold_start(self) -> bool:
        """No history to personalize on: the answer is popularity (the cold-start path)."""
        return self.history_items == 0 and all(m.startswith("popularity") for m in self.methods)

    @property
    def fallback(self) -> bool:
        """Some item (or all: an empty answer) came from past the strategy's first model."""
        return not self.items or any(m.split(ROUTE_SEP)[0] != self.first for m in self.methods)


@dataclass(frozen=True)
class Rules:
    """Business rules applied to every answer.

    Attributes:
        exclude_seen: Drop items the user already has.
        include_categories: Keep only items in one of these categories.
        exclude_categories: Drop items in any of these.
        allow: Only these item ids.
        deny: Never these item ids.
        min_popularity: Drop items with fewer interactions than this.
        mmr_lambda: Re-rank for diversity (maximal marginal relevance): 1 = relevance only.
    """

    exclude_seen: bool = True
    include_categories: Sequence[str] | None = None
    exclude_categories: Sequence[str] | None = None
    allow: Sequence[Any] | None = None
    deny: Sequence[Any] | None = None
    min_popularity: int | None = None
    mmr_lambda: float | None = None


Provider = Callable[[str], Recommender | None]
#: Per user id, their attributes (column -> value), for models that read them.
Attributes = Mapping[Any, Mapping[str, Any]]


def answers_frame(answers: Sequence[Answer]) -> pl.DataFrame:
    """Long format: ``user_id, item_id, rank, score, method, reason`` (reasons joined)."""
    rows = [
        (a.user_id, item, rank, score, method, "; ".join(r.text for r in reasons))
        for a in answers
        for rank, (item, score, method, reasons) in enumerate(
            zip(a.items, a.scores, a.methods, a.reasons or [[]] * len(a.items), strict=True),
            start=1,
        )
    ]
    cols = ["user_id", "item_id", "rank", "score", "method", "reason"]
    if not rows:
        return pl.DataFrame(schema=dict.fromkeys(cols, pl.String))
    users = [r[0] for r in rows]
    if len({type(u) for u in users}) > 1:
        rows = [(str(r[0]), *r[1:]) for r in rows]
    return pl.DataFrame(rows, schema=cols, orient="row").with_columns(
        pl.col("rank").cast(pl.Int32), pl.col("score").cast(pl.Float64)
    )


def _filter(rules: Rules, items_table: pl.DataFrame | None, pop: Recommender | None) -> Any:
    """The `ItemFilter` the rules imply (None when they filter nothing)."""
    allow: set[Any] | None = set(rules.allow) if rules.allow is not None else None
    deny: set[Any] = set(rules.deny or ())
    if rules.include_categories or rules.exclude_categories:
        if items_table is None or "categories" not in items_table.columns:
            raise ConfigError("category rules need a catalog with categories")
        index = _category_index(items_table)
        if rules.include_categories:
            keep: set[Any] = set()
            for cat in rules.include_categories:
                keep |= index.get(cat.strip().lower(), set())
            allow = keep if allow is None else allow & keep
        for cat in rules.exclude_categories or ():
            deny |= index.get(cat.strip().lower(), set())
    if rules.min_popularity is not None and pop is not None:
        deny |= _unpopular(pop, rules.min_popularity)
    if allow is None and not deny:
        return None
    return ItemFilter(
        allow=sorted(allow, key=str) if allow is not None else None, deny=sorted(deny, key=str)
    )


def _category_index(items_table: pl.DataFrame) -> dict[str, set[Any]]:
    """Lower-cased category -> its item ids, built once per catalog."""

    def build() -> dict[str, set[Any]]:
        out: dict[str, set[Any]] = {}
        column = items_table["categories"]
        if column.dtype == pl.String:
            column = column.str.split("|")
        for item, cats in zip(items_table["item_id"].to_list(), column.to_list(), strict=True):
            for cat in cats or ():
                if cat:
                    out.setdefault(str(cat).strip().lower(), set()).add(item)
        return out

    index: dict[str, set[Any]] = _cached("category-index", items_table, build)
    return index


def _unpopular(pop: Recommender, floor: int) -> set[Any]:
    """Items with fewer than ``floor`` interactions (one set per model and floor)."""

    def build() -> dict[int, set[Any]]:
        return {}

    by_floor: dict[int, set[Any]] = _cached("unpopular", pop, build)
    if floor not in by_floor:
        items = pop._fitted()[1]
        counts = np.asarray(pop.item_scores_)  # type: ignore[attr-defined]
        if len(by_floor) > 32:
            by_floor.clear()
        by_floor[floor] = set(items.lookup(np.flatnonzero(counts < floor)).tolist())
    return by_floor[floor]


def _popularity_from_data(get: Provider) -> Recommender | None:
    """Popularity counted from any loaded model's training matrix.

    The chain's last word when the popularity model itself is missing (method
    ``popularity-fallback``).
    """
    from hybridrec.models.popularity import Popularity

    for name in ("als", "ease", "itemknn", "content", "hybrid", "router"):
        model = get(name)
        if model is None:
            continue

        def build(model: Recommender = model) -> Recommender:
            users, items, user_items = model._fitted()
            pop = Popularity()
            pop.users_, pop.items_, pop.user_items_ = users, items, user_items
            counts = np.bincount(user_items.indices, minlength=len(items))
            pop._set_state({"item_scores": counts.astype(np.float32)})
            return pop

        found: Recommender = _cached("popularity-from-data", model, build)
        return found
    return None


def _model_for(name: str, get: Provider, alpha: float) -> Recommender | None:
    if name == "popularity":
        return get(name) or _popularity_from_data(get)
    if name == "mixed":
        als, pop = get("als"), get("popularity")
        if als is None or pop is None:
            return None
        return mixed(als, pop, alpha)
    return get(name)


def answer(
    get: Provider,
    user_ids: Sequence[Any],
    k: int = 10,
    *,
    strategy: str = "auto",
    alpha: float = 0.8,
    rules: Rules | None = None,
    history: History | None = None,
    items_table: pl.DataFrame | None = None,
    chain: Sequence[str] = CHAIN,
    explain: bool = True,
    first: str | None = None,
    attributes: Attributes | None = None,
) -> list[Answer]:
    """Recommend ``k`` items to each user with a strategy and the fallback chain.

    Args:
        get: Returns a model by name, or None when the bundle lacks it (or it failed to load).
        user_ids: The users; unknown ones without history get the cold-start path.
        k: Items per user.
        strategy: One of `STRATEGIES`.
        alpha: ALS weight of the ``mixed`` strategy.
        rules: Business rules.
        history: New interactions per user (fold-in), as in `Recommender.recommend`.
        items_table: The catalog (titles, categories) for reasons and category rules.
        chain: The fallback chain after the strategy's model.
        explain: Attach reasons.
        first: Ask this model first instead of the strategy's.
        attributes: Per user the model has not seen, their attributes (column -> value):
            a model whose user tower reads attributes (the two-tower) answers them from
            these (and any history) without retraining; other models ignore them.

    Raises:
        ConfigError: Unknown strategy, or rules that need what is not there.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    if not isinstance(k, int) or k <= 0:
        raise ConfigError(f"k must be a positive integer (got {k!r})")
    rules = rules or Rules()
    item_filter = _filter(rules, items_table, _model_for("popularity", get, alpha))
    fetch = k * 3 if rules.mmr_lambda is not None else k
    head = first or STRATEGIES[strategy]
    order = list(dict.fromkeys([head, *chain]))
    extra = dict(history or {})
    answers = [Answer(u, first=head) for u in user_ids]
    histories = [_user_history(get, a.user_id, extra) for a in answers]
    for a, hist in zip(answers, histories, strict=True):
        a.history_items = len(hist)
    chosen: list[set[Any]] = [set() for _ in user_ids]
    used_attributes: set[Any] = set()
    for step in order:
        name = step
        todo = [i for i, a in enumerate(answers) if len(a.items) < fetch]
        if not todo:
            break
        model = _model_for(step, get, alpha)
        if model is None:
            for i in todo:
                answers[i].notes.append(f"{step}: not in this model version")
            continue
        if step == "popularity" and get(step) is None:
            name = "popularity-fallback"
        known = model._fitted()[0]
        profiled = _visitors_with_attributes(model, attributes, known)
        if not step.startswith("popularity"):
            # Nothing to personalize on: the user goes straight to the cold-start path.
            todo = [
                i
                for i in todo
                if answers[i].history_items or user_ids[i] in known or user_ids[i] in profiled
            ]
            if not todo:
                continue
        users = [user_ids[i] for i in todo]
        fold: History = {u: extra.get(u, []) for u in users if u in extra or u not in known}
        try:
            labels = [name] * len(users)
            if isinstance(model, Router):
                # Name the route that answered each user, not just "router".
                asked = _id_array(users)
                labels = [f"{name}{ROUTE_SEP}{r}" for r in model.routes_for(asked, fold or None)]
            used_attributes.update(u for u in users if u in profiled)
            got = _ask(
                model,
                users,
                fetch,
                rules=rules,
                item_filter=item_filter,
                fold=fold,
                profiled=profiled,
            )
        except (HybridrecError, ValueError, IndexError) as exc:
            log.warning("%s could not answer (%s); falling back", name, exc)
            for i in todo:
                answers[i].notes.append(f"{name}: {exc}")
            continue
        for row, i in enumerate(todo):
            ids, scores = got[row]
            a = answers[i]
            before = len(a.items)
            for item, score in zip(ids.tolist(), scores.tolist(), strict=True):
                if len(a.items) >= fetch:
                    break
                if item in chosen[i]:
                    continue
                chosen[i].add(item)
                a.items.append(item)
                a.scores.append(float(score))
                a.methods.append(labels[row])
            if len(a.items) < fetch:
                added = len(a.items) - before
                a.notes.append(f"{labels[row]}: {added} items, {fetch - len(a.items)} short")
    if rules.mmr_lambda is not None:
        for a in answers:
            _mmr(a, k, rules.mmr_lambda, get)
    for a in answers:
        del a.items[k:], a.scores[k:], a.methods[k:]
        if attributes and attributes.get(a.user_id) and a.user_id not in used_attributes:
            a.notes.append(
                "attributes: no model asked reads them (a two-tower with user features does)"
            )
        if a.cold_start:
            a.notes.insert(0, "no history to personalize on: cold-start path (popularity)")
    if explain:
        _explain(answers, get, histories, items_table, attributes or {})
    return answers


def _mixed_types(values: Sequence[Any]) -> bool:
    return len({type(v) for v in values}) > 1


def _id_array(users: Sequence[Any]) -> NDArray[Any]:
    return np.asarray(users, dtype=object) if _mixed_types(users) else np.asarray(users)


def _visitors_with_attributes(
    model: Recommender, attributes: Attributes | None, known: Any
) -> dict[Any, Mapping[str, Any]]:
    """The users of ``attributes`` that ``model`` does not know and answers from them."""
    if not attributes or not getattr(model, "reads_user_attributes", False):
        return {}
    return {u: a for u, a in attributes.items() if a and u not in known}


def _ask(
    model: Recommender,
    users: list[Any],
    fetch: int,
    *,
    rules: Rules,
    item_filter: Any,
    fold: History,
    profiled: Mapping[Any, Mapping[str, Any]],
) -> list[tuple[NDArray[Any], NDArray[Any]]]:
    """Each user's (items, scores) from ``model``; visitors with attributes from a view."""
    rest = [r for r, u in enumerate(users) if u not in profiled]
    visitors = [r for r, u in enumerate(users) if u in profiled]
    out: dict[int, tuple[NDArray[Any], NDArray[Any]]] = {}
    for rows, visiting in ((rest, False), (visitors, True)):
        if not rows:
            continue
        group = [users[r] for r in rows]
        source = model
        if visiting:
            table = pl.DataFrame(
                [{"user_id": u, **profiled[u]} for u in dict.fromkeys(group)],
                infer_schema_length=None,
                strict=False,
            )
            source = model.with_visitors(table)  # type: ignore[attr-defined]
        recs = source.recommend(
            _id_array(group),
            fetch,
            exclude_seen=rules.exclude_seen,
            filters=item_filter,
            # A visitor's empty history would blank their row (the contract's "nothing to
            # personalize on"): the view knows them already, from their attributes.
            history={u: fold[u] for u in group if u in fold and (fold[u] or not visiting)} or None,
        )
        for n, r in enumerate(rows):
            out[r] = recs.row(n)
    return [out[i] for i in range(len(users))]


# ---- diversity ------------------------------------------------------------------------------


def _item_vectors(get: Provider, ids: list[Any]) -> NDArray[np.float64] | None:
    als = get("als")
    if als is not None:
        items = als._fitted()[1]
        idx = items.index(ids, missing="mask")
        v = np.zeros((len(ids), als.item_factors_.shape[1]))  # type: ignore[attr-defined]
        ok = idx >= 0
        v[ok] = als.item_factors_[idx[ok]]  # type: ignore[attr-defined]
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        return np.asarray(v / np.where(norms > 0, norms, 1.0))
    return None


def _mmr(a: Answer, k: int, lam: float, get: Provider) -> None:
    """Maximal marginal relevance over the fetched candidates, in place."""
    if not 0.0 <= lam <= 1.0:
        raise ConfigError(f"mmr lambda must be between 0 and 1 (got {lam})")
    n = len(a.items)
    vectors = _item_vectors(get, a.items)
    if n <= 1 or vectors is None:
        return
    rel = np.asarray(a.scores, np.float64)
    span = rel.max() - rel.min()
    rel = (rel - rel.min()) / span if span > 0 else np.ones(n)
    sim = vectors @ vectors.T
    picked: list[int] = []
    left = list(range(n))
    while left and len(picked) < k:
        penalty = sim[np.ix_(left, picked)].max(axis=1) if picked else np.zeros(len(left))
        best = left[int(np.argmax(lam * rel[left] - (1 - lam) * penalty))]
        picked.append(best)
        left.remove(best)
    order = picked + left
    a.items = [a.items[i] for i in order]
    a.scores = [a.scores[i] for i in order]
    a.methods = [a.methods[i] for i in order]


# ---- reasons --------------------------------------------------------------------------------


# Lookups built once per catalog / popularity model (a request must not rebuild them).
_LOOKUPS: dict[tuple[str, int], tuple[object, Any]] = {}


def _cached(kind: str, owner: object, build: Callable[[], Any]) -> Any:
    key = (kind, id(owner))
    hit = _LOOKUPS.get(key)
    if hit is not None and hit[0] is owner:
        return hit[1]
    if len(_LOOKUPS) > 16:
        _LOOKUPS.clear()
    value = build()
    _LOOKUPS[key] = (owner, value)  # keeps the owner alive, so its id stays its own
    return value


def _column_lookup(items_table: pl.DataFrame | None, column: str) -> dict[Any, Any]:
    """``item_id -> column`` of the catalog, built once per catalog (callers only read it)."""
    if items_table is None or column not in items_table.columns:
        return {}
    table = items_table
    lookup: dict[Any, Any] = _cached(
        column,
        table,
        lambda: dict(zip(table["item_id"].to_list(), table[column].to_list(), strict=True)),
    )
    return lookup


def _titles(items_table: pl.DataFrame | None) -> dict[Any, str]:
    return _column_lookup(items_table, "title")


def _categories(items_table: pl.DataFrame | None) -> dict[Any, list[str]]:
    return _column_lookup(items_table, "categories")


class _History(list[Any]):
    """A user's history item ids, and their indices in the vocabulary they were read from.

    Reasons need the indices in each explaining model's vocabulary: the models of a bundle
    share one, so the indices of the training rows are known without a lookup.
    """

    vocab: Vocab | None = None
    positions: NDArray[np.int64] | None = None

    def index_in(self, vocab: Vocab) -> NDArray[np.int64]:
        """The ids' indices in ``vocab`` (-1 where it lacks one)."""
        if vocab is self.vocab and self.positions is not None:
            return self.positions
        return vocab.index(list(self), missing="mask")


def _user_history(get: Provider, user: Any, extra: Mapping[Any, Any]) -> _History:
    """The user's training items (from any loaded model) plus their new history."""
    found = _History()
    new = extra.get(user, [])
    added = list(new.keys()) if isinstance(new, Mapping) else list(new)
    for name in ("als", "itemknn", "ease", "popularity", "content"):
        model = get(name)
        if model is None:
            continue
        users, vocab, user_items = model._fitted()
        idx = users.index([user], missing="mask")[0]
        if idx >= 0:
            row = int(idx)
            rows = np.asarray(
                user_items.indices[user_items.indptr[row] : user_items.indptr[row + 1]]
            )
            found.extend(vocab.lookup(rows).tolist())
            found.vocab, found.positions = vocab, rows.astype(np.int64)
        if added:
            # Ids from the web arrive as text: the catalog's type, so titles resolve.
            added = [
                v.item() if isinstance(v, np.generic) else v
                for v in vocab.coerce(np.asarray(added, dtype=object))
            ]
            merged = list(dict.fromkeys([*found, *added]))
            found = _History(merged)
        break
    return found


def _similarity_rows(model: Recommender, kind: str, hist: _History, recs: list[Any]) -> Any:
    """History × recommended similarity by one model's item-item notion (or None)."""
    items = model._fitted()[1]
    h = hist.index_in(items)
    r = items.index(recs, missing="mask")
    if not (h >= 0).any() or not (r >= 0).any():
        return None
    whole = bool((h >= 0).all() and (r >= 0).all())
    hs, rs = (h, r) if whole else (np.flatnonzero(h >= 0), np.flatnonzero(r >= 0))
    hi, ri = (h, r) if whole else (h[hs], r[rs])
    if kind == "itemknn":
        sim = model.similarity_  # type: ignore[attr-defined]
        block = sim[hi][:, ri]
        block = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
    elif kind == "ease":
        block = model.weight_cells(hi[:, None], ri[None, :])  # type: ignore[attr-defined]
    else:
        unit = _unit_rows(kind, model)
        block = unit[hi] @ unit[ri].T
    if whole:
        out = np.array(block, dtype=np.float64)
    else:
        out = np.full((len(hist), len(recs)), -np.inf)
        out[np.ix_(hs, rs)] = block
    out[out == 0] = -np.inf  # no relation is no evidence
    return out


def _popularity_ranks(get: Provider) -> dict[Any, int]:
    """Item → its popularity rank (1 = most popular), built once per popularity model."""
    pop = _model_for("popularity", get, 0.0)
    if pop is None:
        return {}

    def build_ranks(pop: Recommender = pop) -> dict[Any, int]:
        from hybridrec.models.popularity import Popularity

        if isinstance(pop, Popularity):
            order = pop.ranking()[0]  # the order popularity itself recommends in
        else:
            order = np.argsort(-np.asarray(pop.item_scores_), kind="stable")  # type: ignore[attr-defined]
        ids = pop._fitted()[1].lookup(order).tolist()
        return dict(zip(ids, range(1, order.size + 1), strict=True))

    ranks: dict[Any, int] = _cached("ranks", pop, build_ranks)
    return ranks


def _explain(
    answers: list[Answer],
    get: Provider,
    histories: Sequence[_History],
    items_table: pl.DataFrame | None,
    attributes: Attributes,
) -> None:
    titles = _titles(items_table)
    categories = _categories(items_table)
    ranks = _popularity_ranks(get)

    for a, hist in zip(answers, histories, strict=True):
        cache: dict[str, Any] = {}

        def sims_of(
            kind: str, hist: _History = hist, a: Answer = a, cache: dict[str, Any] = cache
        ) -> Any:
            # Computed on first need only: one similarity source usually explains them all.
            if kind not in cache:
                model = get(kind) if hist and a.items else None
                sims = None if model is None else _similarity_rows(model, kind, hist, a.items)
                if sims is not None:
                    # Per recommended item: the history item most like it, and how much
                    # (as Python lists: the loop below reads them one item at a time).
                    best = np.argmax(sims, axis=0)
                    sims = (best.tolist(), sims[best, np.arange(sims.shape[1])].tolist())
                cache[kind] = sims
            return cache[kind]

        a.reasons = []
        for j, (item, method) in enumerate(zip(a.items, a.methods, strict=True)):
            reasons: list[Reason] = []
            # A router's item is explained by the model of its route.
            base = method.split(ROUTE_SEP)[-1]
            kinds = ("content",) if base == "content" else (*_CF_SIMILARITY, "content")
            if not base.startswith("popularity"):
                for kind in kinds:
                    found = sims_of(kind)
                    if found is None or not math.isfinite(found[1][j]):
                        continue
                    source = hist[found[0][j]]
                    title = titles.get(source, str(source))
                    text = (
                        f"similar in content to {title}"
                        if kind == "content"
                        else f"because you liked {title}"
                    )
                    reasons.append(
                        Reason(
                            text,
                            "content" if kind == "content" else "history",
                            {
                                "item_id": source,
                                "title": title,
                                "similarity": round(found[1][j], 4),
                                "by": kind,
                            },
                        )
                    )
                    break
            profile = attributes.get(a.user_id)
            if not reasons and profile and not base.startswith("popularity"):
                shown = ", ".join(f"{k} {v}" for k, v in profile.items() if v is not None)
                reasons.append(
                    Reason(f"for people like you ({shown})", "profile", {"attributes": profile})
                )
            if not reasons:
                rank = ranks.get(item)
                cats = [c for c in (categories.get(item) or []) if c]
                if cats and rank is not None:
                    reasons.append(
                        Reason(f"popular in {cats[0]}", "popular", {"genre": cats[0], "rank": rank})
                    )
                reasons.append(Reason("popular overall", "popular", {"rank": rank}))
            a.reasons.append(reasons)


# ---- batches --------------------------------------------------------------------------------
# One model over many users (``recommend --model M --all-users``): the model's own blocked,
# threaded `recommend`, reasons computed per block of users with array operations, and users
# the model does not know sent through `answer` (the fallback chain) or skipped.

#: What a batch does with users the model does not know (and who bring no history).
UNKNOWN_POLICIES = ("fallback", "skip", "error")
#: Where a batch's model scores: in this process (blocked, threaded), or on Spark (ALS only;
#: `hybridrec.models.spark_als.recommend_all_users`). Reasons are computed here either way.
ENGINES = ("local", "spark")
# Users per block of reason computation (bounds the history × recommended temporaries).
_REASON_BLOCK = 1024
# Cells (users × (history + recommended) × dimensions) per batched cosine product.
_VECTOR_CELLS = 4_000_000


@dataclass
class Batch:
    """A batch's answers in long format, and what happened to users the model lacks.

    Attributes:
        frame: ``user_id, item_id, rank, score, method, reason``, in the order users were given.
        fallback: Users answered by the fallback chain instead of the model.
        skipped: Users left out.
    """

    frame: pl.DataFrame
    fallback: int = 0
    skipped: int = 0


def answer_batch(
    get: Provider,
    user_ids: Sequence[Any],
    k: int,
    *,
    model: str,
    rules: Rules | None = None,
    history: History | None = None,
    items_table: pl.DataFrame | None = None,
    unknown: str = "fallback",
    reasons: bool = True,
    attributes: Attributes | None = None,
    engine: str = "local",
) -> Batch:
    """Recommend ``k`` items to many users with one model, as a table.

    Known users (and users with ``history``) get ``model``'s answer; so do users it does
    not know but answers from their ``attributes`` (through `answer`); unknown ones, by
    ``unknown``: ``fallback`` answers them through `answer` and the chain after the model
    (the ``method`` column says which model did), ``skip`` leaves them out (counted),
    ``error`` raises. Rules as in `answer`, except diversity (MMR), which needs `answer`.

    ``engine="spark"`` scores the known users of an ALS model on Spark (its configured
    master, else ``SPARK_MASTER``, else ``local[*]``): the same rows and columns as the
    local engine (sets equal up to score ties), for batches larger than one machine
    scores comfortably. Users with extra history, and unknown ones, are answered here.

    Raises:
        ConfigError: Unknown policy or engine, a missing model, an MMR rule, or the Spark
            engine asked of a model that is not ALS.
        UnknownIdError: ``unknown="error"`` and some user is unknown.
    """
    from hybridrec.errors import UnknownIdError

    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; valid: {', '.join(ENGINES)}")

    if unknown not in UNKNOWN_POLICIES:
        raise ConfigError(f"unknown users policy {unknown!r}; valid: {', '.join(UNKNOWN_POLICIES)}")
    rules = rules or Rules()
    if rules.mmr_lambda is not None:
        raise ConfigError("diversity re-ranking (mmr) is not available in batch answers")
    rec = get(model)
    if rec is None:
        raise ConfigError(f"no model {model!r} to answer the batch")
    extra = dict(history or {})
    users = rec._fitted()[0]
    asked = np.asarray(user_ids, dtype=object) if _mixed_types(user_ids) else np.asarray(user_ids)
    is_known = users.index(asked, missing="mask") >= 0 if asked.size else np.zeros(0, bool)
    if extra:
        is_known |= np.asarray([u in extra for u in user_ids], dtype=bool)
    profiled = _visitors_with_attributes(rec, attributes, users)
    if profiled:
        is_known &= np.asarray([u not in profiled for u in user_ids], dtype=bool)
    lost = [u for u, ok in zip(user_ids, is_known, strict=True) if not ok and u not in profiled]
    if lost and unknown == "error":
        raise UnknownIdError(
            "user",
            lost,
            hint="not in the model's training data; --unknown fallback answers them "
            "through the fallback chain, --unknown skip leaves them out",
        )
    frames: list[pl.DataFrame] = []
    known = [u for u, ok in zip(user_ids, is_known, strict=True) if ok]
    if known:
        frames.append(
            _model_frame(
                get,
                rec,
                model,
                known,
                k,
                rules=rules,
                extra=extra,
                items_table=items_table,
                reasons=reasons,
                engine=engine,
            )
        )
    if profiled:
        visitors = [u for u in user_ids if u in profiled]
        answers = answer(
            get,
            visitors,
            k,
            rules=rules,
            history={u: extra[u] for u in visitors if u in extra} or None,
            items_table=items_table,
            chain=[n for n in CHAIN if n != model],
            first=model,
            explain=reasons,
            attributes=profiled,
        )
        frames.append(answers_frame(answers))
    result = Batch(pl.DataFrame(), skipped=len(lost) if unknown == "skip" else 0)
    if lost and unknown == "fallback":
        chain = [n for n in CHAIN if n != model]
        answers = answer(
            get,
            lost,
            k,
            rules=rules,
            items_table=items_table,
            chain=chain,
            first=model,
            explain=reasons,
            attributes=attributes,
        )
        frames.append(answers_frame(answers))
        result.fallback = len(lost)
    result.frame = _ordered(frames, user_ids)
    return result


def _ordered(frames: list[pl.DataFrame], user_ids: Sequence[Any]) -> pl.DataFrame:
    """Frames concatenated in the order of ``user_ids`` (one id type: text when mixed)."""
    cols = ["user_id", "item_id", "rank", "score", "method", "reason"]
    frames = [f for f in frames if f.height]
    if not frames:
        return pl.DataFrame(schema=dict.fromkeys(cols, pl.String))
    for col in ("user_id", "item_id"):
        if len({f.schema[col] for f in frames}) > 1:
            frames = [f.with_columns(pl.col(col).cast(pl.String)) for f in frames]
    frame = pl.concat([f.select(cols) for f in frames])
    if len(frames) > 1:
        typed = frame["user_id"].dtype
        order = pl.DataFrame(
            {"user_id": pl.Series(user_ids, strict=False).cast(typed), "_pos": range(len(user_ids))}
        ).unique("user_id", keep="first")
        frame = (
            frame.join(order, on="user_id", how="left")
            .sort("_pos", "rank", maintain_order=True)
            .drop("_pos")
        )
    return frame


def _model_frame(
    get: Provider,
    rec: Recommender,
    name: str,
    user_ids: list[Any],
    k: int,
    *,
    rules: Rules,
    extra: Mapping[Any, Any],
    items_table: pl.DataFrame | None,
    reasons: bool,
    engine: str = "local",
) -> pl.DataFrame:
    """One model's answers to users it can answer, in long format with reasons."""
    item_filter = _filter(rules, items_table, _model_for("popularity", get, 0.0))
    ids = np.asarray(user_ids, dtype=object) if _mixed_types(user_ids) else np.asarray(user_ids)
    hist = {u: extra[u] for u in user_ids if u in extra} if extra else {}
    if engine == "spark":
        frame, answered, rows = _spark_frame(
            rec, ids, k, rules=rules, item_filter=item_filter, hist=hist
        )
    else:
        recs = rec.recommend(
            ids, k, exclude_seen=rules.exclude_seen, filters=item_filter, history=hist or None
        )
        frame, answered = recs.to_frame(), recs.user_ids
        rows = np.nonzero(recs.indices >= 0)[0]
    frame = frame.with_columns(pl.lit(name).alias("method"))
    if not reasons:
        return frame.with_columns(pl.lit("").alias("reason"))
    texts = batch_reasons(
        get,
        answered,
        rows,
        frame["item_id"].to_numpy(),
        name,
        extra=extra,
        items_table=items_table,
    )
    return frame.with_columns(pl.Series("reason", texts, dtype=pl.String))


def _spark_frame(
    rec: Recommender,
    ids: NDArray[Any],
    k: int,
    *,
    rules: Rules,
    item_filter: ItemFilter | None,
    hist: Mapping[Any, Any],
) -> tuple[pl.DataFrame, NDArray[Any], NDArray[np.int64]]:
    """`_model_frame`'s scoring on Spark: the frame in ``ids`` order, the users, cell rows."""
    from hybridrec.models.als import ALS

    if not isinstance(rec, ALS):
        raise ConfigError(
            f"the Spark engine scores ALS models only ({rec.name!r} is not); use engine local"
        )
    if hist:
        raise ConfigError(
            "the Spark engine answers known users from their training history; users with "
            "extra history (a users file with item_id rows) need engine local"
        )
    from hybridrec.models.spark_als import recommend_all_users

    users, items, _ = rec._fitted()
    spark_cfg = rec.config.backend == "spark"
    frame = recommend_all_users(
        rec,
        k,
        exclude_seen=rules.exclude_seen,
        allowed=item_filter.mask(items) if item_filter is not None else None,
        master=rec.config.master if spark_cfg else None,
        work_dir=rec.config.work_dir if spark_cfg else None,
    )
    pos = users.index(users.coerce(ids))
    answered = users.lookup(pos)
    if not np.array_equal(pos, np.arange(len(users))):
        # Every known user was scored: keep the asked ones, in the order asked.
        order = pl.DataFrame({"user_id": answered, "_pos": np.arange(pos.size)})
        frame = frame.join(order, on="user_id").sort("_pos", "rank").drop("_pos")
    rows = (
        users.index(users.coerce(frame["user_id"].to_numpy()))
        if frame.height
        else np.zeros(0, np.int64)
    )
    # Rows index ``answered``: map vocabulary positions to positions in the asked order.
    where = np.empty(len(users), np.int64)
    where[pos] = np.arange(pos.size)
    return frame, answered, where[rows]


def batch_reasons(
    get: Provider,
    user_ids: NDArray[Any],
    rows: NDArray[np.int64],
    items: NDArray[Any],
    method: str,
    *,
    extra: Mapping[Any, Any] | None = None,
    items_table: pl.DataFrame | None = None,
) -> list[str]:
    """Reason texts (joined by "; ") for recommended cells, the same rules as `answer`'s.

    Cell ``c`` recommends ``items[c]`` to ``user_ids[rows[c]]`` (``rows`` ascending, as
    `Recommendations.to_frame` emits them). Per block of users, every (history item,
    recommended item) pair of a user is scored at once by the first similarity that knows
    both (ALS factor cosine, item-kNN, EASE; content embeddings for content answers); the
    history item of highest similarity explains the cell, and cells with no evidence (and
    popularity answers) get the popularity reasons.
    """
    extra = extra or {}
    titles = _titles(items_table)
    out: list[str | None] = [None] * rows.size
    kinds: tuple[str, ...] = ()
    if not method.startswith("popularity"):
        kinds = ("content",) if method == "content" else _CF_SIMILARITY
    hist = _batch_histories(get, user_ids, extra)
    if hist is not None and rows.size:
        vocab, indptr, entries = hist
        prefix = "similar in content to " if kinds == ("content",) else "because you liked "
        starts = np.searchsorted(rows, np.arange(0, user_ids.size, _REASON_BLOCK))
        bounds = [*starts.tolist(), rows.size]
        for lo, hi in itertools.pairwise(bounds):
            if lo == hi:
                continue
            sources = _block_sources(
                get,
                kinds,
                vocab=vocab,
                indptr=indptr,
                entries=entries,
                cell_rows=rows[lo:hi],
                cell_items=items[lo:hi],
            )
            found = np.flatnonzero(sources >= 0)
            named = vocab.lookup(sources[found]).tolist()
            for c, source in zip(found.tolist(), named, strict=True):
                out[lo + c] = prefix + titles.get(source, str(source))
    popular = _popular_texts(get, items_table)
    return [
        text if text is not None else popular(item)
        for text, item in zip(out, items.tolist(), strict=True)
    ]


def _batch_histories(
    get: Provider, user_ids: NDArray[Any], extra: Mapping[Any, Any]
) -> tuple[Any, NDArray[np.int64], NDArray[np.int64]] | None:
    """Users' training items plus new history, as CSR parts: (item vocab, indptr, items).

    The training rows come from the first loaded model, as in `answer`'s reasons.
    """
    for name in ("als", "itemknn", "ease", "popularity", "content"):
        model = get(name)
        if model is None:
            continue
        users, vocab, user_items = model._fitted()
        idx = users.index(user_ids, missing="mask")
        rows = user_items[np.maximum(idx, 0)]
        counts = np.where(idx >= 0, np.diff(rows.indptr), 0)
        keep = np.repeat(idx >= 0, np.diff(rows.indptr))
        entries = rows.indices[keep].astype(np.int64)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        plain = [v.item() if isinstance(v, np.generic) else v for v in user_ids.tolist()]
        if not any(u in extra for u in plain):
            return vocab, indptr, entries
        parts = []
        for i, u in enumerate(plain):
            own = entries[indptr[i] : indptr[i + 1]]
            new = extra.get(u)
            if new:
                add = vocab.index(list(new), missing="mask")
                own = np.concatenate([own, add[add >= 0]])
                own = own[np.sort(np.unique(own, return_index=True)[1])]
            parts.append(own.astype(np.int64))
        lengths = np.asarray([p.size for p in parts], np.int64)
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return vocab, indptr, np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return None


# History × recommended pairs scored at once (bounds the gathered factor rows).
_PAIR_CHUNK = 262_144


def _unit_rows(kind: str, model: Recommender) -> NDArray[np.float32]:
    """Unit-length item vectors of an ALS or content model, built once per model."""

    def build() -> NDArray[np.float32]:
        v = model.item_factors_ if kind == "als" else model.embeddings_  # type: ignore[attr-defined]
        v = np.asarray(v, np.float32)
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        return np.asarray(v / np.where(norms > 0, norms, 1.0), np.float32)

    unit: NDArray[np.float32] = _cached(f"unit-{kind}", model, build)
    return unit


def _pair_similarity(
    kind: str, model: Recommender, h: NDArray[np.int64], r: NDArray[np.int64]
) -> NDArray[np.float64]:
    """Similarity of item pairs ``(h[p], r[p])`` in one model's item notion."""
    out = np.empty(h.size, np.float64)
    for lo in range(0, h.size, _PAIR_CHUNK):
        hs, rs = h[lo : lo + _PAIR_CHUNK], r[lo : lo + _PAIR_CHUNK]
        if kind == "itemknn":
            sim = model.similarity_  # type: ignore[attr-defined]
            block = np.asarray(sim[hs, rs]).ravel()
        elif kind == "ease":
            block = model.weight_cells(hs, rs)  # type: ignore[attr-defined]
        else:
            unit = _unit_rows(kind, model)
            block = np.einsum("ij,ij->i", unit[hs], unit[rs])
        out[lo : lo + hs.size] = block
    return out


def _block_sources(
    get: Provider,
    kinds: Sequence[str],
    *,
    vocab: Any,
    indptr: NDArray[np.int64],
    entries: NDArray[np.int64],
    cell_rows: NDArray[np.int64],
    cell_items: NDArray[Any],
) -> NDArray[np.int64]:
    """Per cell, the history item (index in ``vocab``) that explains it best, or -1."""
    sources = np.full(cell_rows.size, -1, np.int64)
    starts = indptr[cell_rows]
    lens = indptr[cell_rows + 1] - starts
    for kind in kinds:
        model = get(kind)
        open_ = (sources < 0) & (lens > 0)
        if model is None or not open_.any():
            continue
        own = model._fitted()[1]
        cells = np.flatnonzero(open_)
        r_idx = own.index(cell_items[cells], missing="mask")
        if kind in ("als", "content"):
            _vector_sources(
                kind,
                model,
                own=own,
                vocab=vocab,
                history=(indptr, entries),
                cell_rows=cell_rows[cells],
                cells=cells,
                r_idx=r_idx,
                sources=sources,
            )
            continue
        n_pairs = lens[cells]
        total = int(n_pairs.sum())
        pair_cell = np.repeat(np.arange(cells.size), n_pairs)
        offsets = np.arange(total) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs)
        pair_entry = np.repeat(starts[cells], n_pairs) + offsets
        hist_items = entries[pair_entry]
        h_idx = hist_items if own == vocab else own.index(vocab.lookup(hist_items), missing="mask")
        r_pair = r_idx[pair_cell]
        sim = np.full(total, -np.inf)
        ok = (h_idx >= 0) & (r_pair >= 0)
        if ok.any():
            sim[ok] = _pair_similarity(kind, model, h_idx[ok], r_pair[ok])
        sim[(sim == 0) | ~np.isfinite(sim)] = -np.inf  # no relation is no evidence
        seg = np.concatenate([[0], np.cumsum(n_pairs)[:-1]])
        best = np.maximum.reduceat(sim, seg)
        first = np.minimum.reduceat(np.where(sim == best[pair_cell], np.arange(total), total), seg)
        found = np.isfinite(best)
        sources[cells[found]] = hist_items[first[found]]
    return sources


def _vector_sources(
    kind: str,
    model: Recommender,
    *,
    own: Any,
    vocab: Any,
    history: tuple[NDArray[np.int64], NDArray[np.int64]],
    cell_rows: NDArray[np.int64],
    cells: NDArray[np.int64],
    r_idx: NDArray[np.int64],
    sources: NDArray[np.int64],
) -> None:
    """`_block_sources` for factor / embedding cosines: history × recommended per user.

    Users are taken in groups of similar history length, and each group is one batched
    product of its padded history vectors and recommended items' vectors (at most
    `_VECTOR_CELLS` cells): the per-pair gather it replaces copies every history vector
    k times, a loop over users pays Python per user.
    """
    indptr, entries = history
    unit = _unit_rows(kind, model)
    to_own = (
        None
        if own == vocab
        else _cached(f"to-{kind}", model, lambda: own.index(vocab.ids, missing="mask"))
    )
    # Cells come grouped by user: one group per user, in order.
    starts = np.flatnonzero(np.r_[True, np.diff(cell_rows) != 0])
    sizes = np.diff(np.r_[starts, cell_rows.size])
    users = cell_rows[starts]
    lengths = indptr[users + 1] - indptr[users]
    width = int(sizes.max(initial=0))
    dim = unit.shape[1]
    # Users in buckets of history length within a factor of two, so padding at most doubles
    # a group's product; each bucket in groups of at most `_VECTOR_CELLS` cells.
    bucket = np.ceil(np.log2(np.maximum(lengths, 1))).astype(np.int64)
    bucket[lengths == 0] = -1

    def group_sources(group: NDArray[np.int64]) -> None:
        # Padded history (-1 beyond each user's length) and recommended items per user.
        pos = np.arange(int(lengths[group].max()))
        at = np.minimum(indptr[users[group], None] + pos, entries.size - 1)
        hist = np.where(pos[None, :] < lengths[group, None], entries[at], -1)
        h = hist if to_own is None else np.where(hist >= 0, to_own[np.maximum(hist, 0)], -1)
        col = np.arange(width)
        cell_at = np.minimum(starts[group, None] + col, r_idx.size - 1)
        valid_r = col[None, :] < sizes[group, None]
        r = np.where(valid_r, r_idx[cell_at], -1)
        sims = np.matmul(unit[np.maximum(h, 0)], unit[np.maximum(r, 0)].transpose(0, 2, 1))
        sims[(h < 0)[:, :, None] | (r < 0)[:, None, :] | (sims == 0)] = -np.inf  # no evidence
        best = np.argmax(sims, axis=1)  # the first best history item, as per user
        ok = np.isfinite(np.take_along_axis(sims, best[:, None, :], axis=1)[:, 0, :]) & valid_r
        gi, ci = np.nonzero(ok)
        sources[cells[cell_at[gi, ci]]] = hist[gi, best[gi, ci]]

    for b in np.unique(bucket[bucket >= 0]).tolist():
        members = np.flatnonzero(bucket == b)
        step = max(1, _VECTOR_CELLS // ((1 << b) * (width + dim) + width * dim))
        for lo in range(0, members.size, step):
            group_sources(members[lo : lo + step])


def _popular_texts(get: Provider, items_table: pl.DataFrame | None) -> Callable[[Any], str]:
    """Item → its popularity reasons ("popular in <genre>; popular overall"), memoized."""
    categories = _categories(items_table)
    ranks = _popularity_ranks(get)
    memo: dict[Any, str] = {}

    def text(item: Any) -> str:
        hit = memo.get(item)
        if hit is None:
            cats = [c for c in (categories.get(item) or []) if c]
            hit = "popular overall"
            if cats and item in ranks:
                hit = f"popular in {cats[0]}; popular overall"
            memo[item] = hit
        return hit

    return text
