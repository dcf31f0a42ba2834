"""FastAPI dependencies: how routes reach the process state and the served bundle.

They are ``async`` because they never block: a synchronous dependency would cost a trip to
the thread pool on every request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from hybridrec.bundle import Bundle
from hybridrec.serving.state import AppState

__all__ = ["BundleDep", "StateDep", "get_bundle", "get_state"]


async def get_state(request: Request) -> AppState:
    """The `AppState` of the app serving ``request``."""
    state: AppState = request.app.state.hybridrec
    return state


async def get_bundle(state: Annotated[AppState, Depends(get_state)]) -> Bundle:
    """The bundle being served, held for the whole request (a reload cannot pull it away).

    Raises:
        HTTPException: 503 while no model is loaded.
    """
    if not state.service.ready:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"no model loaded yet from {state.service.model_dir}",
        )
    return state.service.bundle


StateDep = Annotated[AppState, Depends(get_state)]
BundleDep = Annotated[Bundle, Depends(get_bundle)]
