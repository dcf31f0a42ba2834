"""``/admin`` and ``/debug``: reload the model, inspect shapes (bearer token required)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from hybridrec.data.vocab import Vocab
from hybridrec.serving.auth import require_admin
from hybridrec.serving.deps import BundleDep, StateDep
from hybridrec.serving.schemas import ModelShapes, ReloadResponse

__all__ = ["AUTH_RESPONSES", "router"]

AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No bearer token"},
    403: {"description": "Wrong bearer token"},
    404: {"description": "Admin routes are off (no token configured)"},
}
router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin)], responses=AUTH_RESPONSES)


@router.post(
    "/admin/reload-model",
    response_model=ReloadResponse,
    responses={409: {"model": ReloadResponse, "description": "Refused; the old one serves"}},
)
def reload_model(state: StateDep) -> Any:
    """Load the store's ``current`` version beside the served one and swap atomically.

    Requests in flight finish on the version they started with. A version that fails
    verification or loading is refused (409) and the old one keeps serving.
    """
    result = state.reload()
    body = ReloadResponse(
        ok=result.ok,
        version=result.version,
        previous=result.previous,
        seconds=result.seconds,
        error=result.error,
    )
    if not result.ok:
        return JSONResponse(body.model_dump(), status_code=409)
    return body


def _shapes(model: Any) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for attr, value in vars(model).items():
        if isinstance(value, np.ndarray) or sp.issparse(value):
            out[attr] = [int(n) for n in value.shape]
        elif isinstance(value, Vocab):
            out[attr] = [len(value)]
        elif hasattr(value, "ntotal"):
            out[attr] = [int(value.ntotal), int(getattr(value, "d", 0))]
        elif hasattr(value, "index") and hasattr(value.index, "ntotal"):
            out[attr] = [int(value.index.ntotal), int(getattr(value.index, "d", 0))]
    return out


@router.get("/debug/model-shapes", response_model=ModelShapes)
def model_shapes(bundle: BundleDep) -> ModelShapes:
    """Factor, similarity, index and vocabulary shapes of the models loaded so far.

    Models of parts that load lazily and were not needed yet are listed as not loaded
    rather than loaded for this.
    """
    loaded = bundle.loaded_parts()
    parts = {name: info.get("part", "cf") for name, info in bundle.manifest["models"].items()}
    models = {name: _shapes(bundle.model(name)) for name, part in parts.items() if part in loaded}
    return ModelShapes(
        version=bundle.version,
        loaded_parts=loaded,
        models=models,
        not_loaded=[name for name, part in parts.items() if part not in loaded],
    )
