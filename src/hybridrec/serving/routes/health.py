"""``/health``, ``/health/ready`` and ``/metrics``."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from hybridrec.serving import metrics
from hybridrec.serving.deps import StateDep
from hybridrec.serving.routes.recommend import promptly
from hybridrec.serving.schemas import HealthResponse, ReadyResponse
from hybridrec.serving.state import AppState

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthResponse)
async def health(state: StateDep) -> HealthResponse:
    """Status, the served version, counts, loaded parts, database state, uptime."""
    # The database ping blocks: a thread, ahead of answers (`promptly`).
    return await promptly(_health, state)


def _health(state: AppState) -> HealthResponse:
    service = state.service
    bundle = service.bundle if service.ready else None
    users = items = None
    if bundle is not None:
        info = bundle.manifest.get("models", {}).get(bundle.default_model, {})
        users, items = info.get("users"), info.get("items")
    last = service.last_result
    return HealthResponse(
        status="ok" if bundle is not None else "loading",
        ready=bundle is not None,
        model_version=bundle.version if bundle else None,
        created_at=bundle.created_at if bundle else None,
        default_model=bundle.default_model if bundle else None,
        models=bundle.model_names if bundle else [],
        users=users,
        items=items,
        loaded_parts=bundle.loaded_parts() if bundle else [],
        uptime_seconds=round(time.time() - state.started, 3),
        database="ok" if state.store.ping() else "unavailable",
        database_backend=state.store.backend,
        online_users=len(state.online),
        last_reload=None
        if last is None
        else {"ok": last.ok, "version": last.version, "error": last.error},
    )


@router.get(
    "/health/ready",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "No model loaded yet"}},
)
async def ready(state: StateDep) -> Any:
    """200 once a model is loaded, 503 before (nothing that blocks: on the loop)."""
    service = state.service
    if not service.ready:
        return JSONResponse(ReadyResponse(ready=False, model_version=None).model_dump(), 503)
    return ReadyResponse(ready=True, model_version=service.bundle.version)


@router.get("/metrics", response_class=Response)
def prometheus_metrics() -> Response:
    """Prometheus exposition: requests, latency, fallbacks, events, reloads, model version."""
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE_LATEST)
