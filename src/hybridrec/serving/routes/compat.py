"""Compatibility routes for clients of an older prediction service.

``GET /api/predictions/user/{user_id}?limit=N`` answers what the ``ranked`` strategy answers
(the two-stage ranker, through the same fallback chain as every route) in the old service's
envelope: ``{"success": true, "data": {"predictions": [{"productId", "productName",
"score"}]}}``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from hybridrec.bundle import Bundle
from hybridrec.models.explain import Rules
from hybridrec.serving.deps import bundle_of, state_of
from hybridrec.serving.routes.recommend import (
    UserId,
    clamp_k,
    offload,
    ranked_items,
)
from hybridrec.serving.schemas import MAX_K
from hybridrec.serving.strategies import Strategy, recommend

__all__ = ["router"]

router = APIRouter(tags=["compatibility"])


class Prediction(BaseModel):
    """One predicted product, as the old service named its fields."""

    model_config = ConfigDict(populate_by_name=True)

    product_id: Any = Field(alias="productId")
    product_name: str | None = Field(default=None, alias="productName")
    score: float


class PredictionData(BaseModel):
    """The ``data`` member: the predictions, best first."""

    predictions: list[Prediction]


class PredictionResponse(BaseModel):
    """The old service's envelope."""

    success: bool = True
    data: PredictionData


def _predictions(bundle: Bundle, user_id: str, k: int, rules: Rules, history: Any) -> Response:
    result = recommend(
        bundle, user_id, k, Strategy.ranked, rules=rules, history=history, explain=False
    )
    items = ranked_items(bundle, result.items)
    body = PredictionResponse(
        data=PredictionData(
            predictions=[
                Prediction(product_id=i.item_id, product_name=i.title, score=i.score) for i in items
            ]
        )
    )
    # Serialized on the worker thread, with the old field names.
    return Response(body.model_dump_json(by_alias=True), media_type="application/json")


@router.get(
    "/api/predictions/user/{user_id}",
    response_model=PredictionResponse,
    response_model_by_alias=True,
)
async def predictions(
    request: Request,
    user_id: UserId,
    limit: Annotated[int, Query(ge=1, le=MAX_K, description="How many products.")] = 10,
) -> Response:
    """The ``ranked`` strategy's top ``limit`` for a user, in the old service's format."""
    state = state_of(request)
    bundle = bundle_of(state)
    request.state.strategy = Strategy.ranked.value
    history, denied = state.online.get(user_id)
    k = clamp_k(bundle, limit, [])
    rules = Rules(deny=denied or None)
    return await offload(
        _predictions,
        bundle,
        user_id,
        k,
        rules,
        history,
        kind=("compat", Strategy.ranked.value, k),
    )
