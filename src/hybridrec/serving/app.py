"""The FastAPI application: `create_app` wires the state and the routes together.

Settings, the model service and the event store make the process state; the routes reach it
through dependencies. OpenAPI at ``/docs``.

``hybridrec serve`` runs `create_app_from_env` under uvicorn, in one or more processes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from hybridrec import __version__
from hybridrec.config import Settings
from hybridrec.errors import HybridrecError, UnknownIdError
from hybridrec.serving.events import DatabaseUnavailableError, EventStore
from hybridrec.serving.limits import BodyLimitMiddleware
from hybridrec.serving.metrics import MetricsMiddleware
from hybridrec.serving.routes import ROUTERS
from hybridrec.serving.routes.recommend import inline_below_s
from hybridrec.serving.service import ModelService
from hybridrec.serving.state import AppState

__all__ = ["create_app", "create_app_from_env"]

log = logging.getLogger(__name__)

_DESCRIPTION = """\
Recommendations from the model store's current version, with online updates from the
events posted here. Strategies: `auto` (router), `hybrid`, `als`, `content`, `two_tower`,
`ranked`, `popular`, `mixed`; a strategy whose model is not in the served version falls back
(hybrid → ALS → two-tower → content → popular, the same chain as `hybridrec recommend`), and
each item's `method` and the response's `method_used` say which model answered.
"""


def create_app(
    settings: Settings | None = None,
    service: ModelService | None = None,
    *,
    store: EventStore | None = None,
) -> FastAPI:
    """Build the app.

    Args:
        settings: Process settings (default: from ``HYBRIDREC_*`` variables).
        service: The model service (default: one over ``settings.model_dir``); loaded on
            start when it is not loaded yet.
        store: The event store (default: from the settings).
    """
    settings = settings or Settings()
    inline_below_s()  # a bad HYBRIDREC_INLINE_MS stops start-up, not a request
    state = AppState(settings, service, store)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(state.start)
        try:
            yield
        finally:
            await run_in_threadpool(state.stop)

    app = FastAPI(
        title="hybridrec",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.hybridrec = state
    # Inside the metrics middleware, so refused requests (413, 422) are counted too.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware)
    for router in ROUTERS:
        app.include_router(router)
    _add_error_handlers(app)
    return app


def create_app_from_env() -> FastAPI:
    """The app configured from ``HYBRIDREC_*`` variables (uvicorn's factory)."""
    return create_app(Settings())


def _add_error_handlers(app: FastAPI) -> None:
    async def unknown_id(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status.HTTP_404_NOT_FOUND)

    async def db_down(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status.HTTP_503_SERVICE_UNAVAILABLE)

    async def bad_request(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status.HTTP_400_BAD_REQUEST)

    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed: %r", request.method, request.url.path, exc, exc_info=exc)
        return JSONResponse(
            {"detail": f"internal error ({type(exc).__name__}); see the server log"},
            status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    app.add_exception_handler(UnknownIdError, unknown_id)
    app.add_exception_handler(DatabaseUnavailableError, db_down)
    app.add_exception_handler(HybridrecError, bad_request)
    app.add_exception_handler(Exception, internal)
