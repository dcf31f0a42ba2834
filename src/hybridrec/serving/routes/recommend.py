"""``/recommend``: for a known (or newly seen) user, and for an anonymous visitor."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from hybridrec.bundle import Bundle
from hybridrec.models.base import ItemFilter
from hybridrec.serving import metrics
from hybridrec.serving.catalog import catalog_of
from hybridrec.serving.deps import BundleDep, StateDep
from hybridrec.serving.events import ID_MAX_LENGTH
from hybridrec.serving.schemas import (
    MAX_K,
    TEXT_PATTERN,
    RecommendationResponse,
    RecommendedItem,
    Strategy,
    VisitorRequest,
)
from hybridrec.serving.strategies import Answer, ScoredItem, answer

__all__ = ["router"]

router = APIRouter(tags=["recommend"])

# The handlers are ``async`` on purpose: answering is a millisecond of CPU-bound work under
# the GIL, which a thread-pool round trip would only slow down.

UserId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=ID_MAX_LENGTH,
        pattern=TEXT_PATTERN,
        description="The user's id (any text).",
    ),
]
K = Annotated[int, Query(ge=1, le=MAX_K, description="How many items.")]
Alpha = Annotated[
    float, Query(ge=0.0, le=1.0, description="mixed: weight of ALS against popularity.")
]
Category = Annotated[
    list[str] | None,
    Query(max_length=20, description="Only items of these categories (repeatable)."),
]


def make_filters(
    bundle: Bundle, categories: list[str] | None, denied: list[str], notes: list[str]
) -> ItemFilter | None:
    """Category allow-list and the user's dislikes as one `ItemFilter` (None: no rule)."""
    allow = None
    if categories:
        allow = catalog_of(bundle).in_categories(categories)
        if not allow:
            notes.append(f"no items in categories {', '.join(categories)}")
    if allow is None and not denied:
        return None
    return ItemFilter(allow=allow, deny=denied or None)


def clamp_k(bundle: Bundle, k: int, notes: list[str]) -> int:
    """``k`` capped at the number of items the served version knows (with a note if it was)."""
    counts = [int(m.get("items") or 0) for m in bundle.manifest.get("models", {}).values()]
    n_items = max([*counts, bundle.items.height if bundle.items is not None else 0, 1])
    if k > n_items:
        notes.append(f"k={k} is more than the {n_items} items; answered k={n_items}")
        return n_items
    return k


def ranked_items(bundle: Bundle, items: Sequence[ScoredItem]) -> list[RecommendedItem]:
    """Response items, ranked from 1, with titles from the bundle's catalog."""
    catalog = catalog_of(bundle)
    return [
        RecommendedItem(
            item_id=item.item_id,
            title=catalog.title(item.item_id),
            score=item.score,
            rank=rank,
            method=item.method,
            reasons=list(item.reasons),
        )
        for rank, item in enumerate(items, start=1)
    ]


def to_response(
    bundle: Bundle,
    *,
    user_id: str | None,
    strategy: Strategy,
    k: int,
    result: Answer,
    history_items: int,
    notes: list[str],
) -> RecommendationResponse:
    """Translate an `Answer` into the response body (titles from the catalog)."""
    if result.fallback:
        metrics.FALLBACKS.labels(strategy.value, result.method_used).inc()
    return RecommendationResponse(
        user_id=user_id,
        strategy=strategy,
        method_used=result.method_used,
        cold_start=result.cold_start,
        fallback=result.fallback,
        model_version=bundle.version,
        k=k,
        history_items=history_items,
        items=ranked_items(bundle, result.items),
        notes=notes + result.notes,
    )


def _recommend_user(
    *,
    request: Request,
    state: StateDep,
    bundle: Bundle,
    user_id: str,
    k: int,
    strategy: Strategy,
    alpha: float,
    exclude_seen: bool,
    category: list[str] | None,
) -> RecommendationResponse:
    request.state.strategy = strategy.value
    history, denied = state.online.get(user_id)
    notes: list[str] = []
    k = clamp_k(bundle, k, notes)
    filters = make_filters(bundle, category, denied, notes)
    result = answer(
        bundle,
        user_id,
        k,
        strategy,
        alpha=alpha,
        exclude_seen=exclude_seen,
        filters=filters,
        history=history,
    )
    return to_response(
        bundle,
        user_id=user_id,
        strategy=strategy,
        k=k,
        result=result,
        history_items=len(history),
        notes=notes,
    )


@router.get("/recommend/user/{user_id}", response_model=RecommendationResponse)
async def recommend_user(  # noqa: PLR0917 - FastAPI parameters
    request: Request,
    state: StateDep,
    bundle: BundleDep,
    user_id: UserId,
    k: K = 10,
    strategy: Annotated[
        Strategy, Query(description="auto uses the router; missing models fall back.")
    ] = Strategy.auto,
    alpha: Alpha = 0.8,
    exclude_seen: Annotated[bool, Query(description="Leave out items the user has.")] = True,
    category: Category = None,
) -> RecommendationResponse:
    """Top-k items for a user. An unknown user gets the cold-start path (not 404)."""
    return _recommend_user(
        request=request,
        state=state,
        bundle=bundle,
        user_id=user_id,
        k=k,
        strategy=strategy,
        alpha=alpha,
        exclude_seen=exclude_seen,
        category=category,
    )


@router.get("/recommend/mixed/{user_id}", response_model=RecommendationResponse)
async def recommend_mixed(  # noqa: PLR0917 - FastAPI parameters
    request: Request,
    state: StateDep,
    bundle: BundleDep,
    user_id: UserId,
    k: K = 10,
    alpha: Alpha = 0.8,
) -> RecommendationResponse:
    """Shortcut for ``strategy=mixed``: ALS blended with popularity by ``alpha``."""
    return _recommend_user(
        request=request,
        state=state,
        bundle=bundle,
        user_id=user_id,
        k=k,
        strategy=Strategy.mixed,
        alpha=alpha,
        exclude_seen=True,
        category=None,
    )


@router.post("/recommend", response_model=RecommendationResponse)
async def recommend_visitor(
    request: Request, bundle: BundleDep, body: VisitorRequest
) -> RecommendationResponse:
    """Top-k items for a visitor with no id, from the items they just looked at (fold-in)."""
    request.state.strategy = body.strategy.value
    notes: list[str] = []
    k = clamp_k(bundle, body.k, notes)
    if body.attributes:
        notes.append("attributes are not used by the models of this version")
    history: dict[Any, float] = {}
    for item in body.item_ids:
        key = str(item)
        history[key] = history.get(key, 0.0) + 1.0
    filters = make_filters(bundle, body.category, [], notes)
    # An id no vocabulary can hold, so the visitor is always folded in from ``item_ids``.
    visitor = f"visitor:{uuid.uuid4().hex}"
    result = answer(
        bundle,
        visitor,
        k,
        body.strategy,
        alpha=body.alpha,
        exclude_seen=body.exclude_seen,
        filters=filters,
        history=history,
    )
    return to_response(
        bundle,
        user_id=None,
        strategy=body.strategy,
        k=k,
        result=result,
        history_items=len(history),
        notes=notes,
    )
