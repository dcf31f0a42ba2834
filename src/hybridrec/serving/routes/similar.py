"""``/similar``: items like a given item."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from hybridrec.errors import UnknownIdError
from hybridrec.serving.deps import BundleDep
from hybridrec.serving.events import ID_MAX_LENGTH
from hybridrec.serving.routes.recommend import clamp_k, offload, ranked_items
from hybridrec.serving.schemas import MAX_K, TEXT_PATTERN, SimilarMethod, SimilarResponse
from hybridrec.serving.strategies import similar

__all__ = ["router"]

router = APIRouter(tags=["similar"])

ItemId = Annotated[
    str,
    Path(
        min_length=1, max_length=ID_MAX_LENGTH, pattern=TEXT_PATTERN, description="The item's id."
    ),
]
K = Annotated[int, Query(ge=1, le=MAX_K, description="How many items.")]
Method = Annotated[
    SimilarMethod, Query(description="cf (interactions), content, or hybrid (both).")
]


@router.get(
    "/similar/item/{item_id}",
    response_model=SimilarResponse,
    responses={404: {"description": "Unknown item"}},
)
async def similar_item(
    bundle: BundleDep, item_id: ItemId, k: K = 10, method: Method = SimilarMethod.cf
) -> SimilarResponse:
    """The k items most similar to ``item_id``; an unknown item is a 404."""
    notes: list[str] = []
    k = clamp_k(bundle, k, notes)
    try:
        result = await offload(similar, bundle, item_id, k, method)
    except UnknownIdError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    return SimilarResponse(
        item_id=item_id,
        method=method,
        method_used=result.method_used,
        model_version=bundle.version,
        k=k,
        items=ranked_items(bundle, result.items),
        notes=notes + result.notes,
    )


@router.get(
    "/similar/movie/{item_id}",
    response_model=SimilarResponse,
    responses={404: {"description": "Unknown item"}},
)
async def similar_movie(
    bundle: BundleDep, item_id: ItemId, k: K = 10, method: Method = SimilarMethod.cf
) -> SimilarResponse:
    """Alias of ``/similar/item/{item_id}``."""
    return await similar_item(bundle, item_id, k, method)
