"""FastAPI dependencies: how routes reach the process state and the served bundle.

They are ``async`` because they never block: a synchronous dependency would cost a trip to
the thread pool on every request. The hottest route calls `state_of` / `bundle_of` itself:
each dependency FastAPI resolves costs a few tens of microseconds.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from hybridrec.bundle import Bundle
from hybridrec.serving.state import AppState

__all__ = [
    "BundleDep",
    "StateDep",
    "arm_bundle_of",
    "bundle_of",
    "get_bundle",
    "get_state",
    "state_of",
]


def state_of(request: Request) -> AppState:
    """The `AppState` of the app serving ``request``."""
    state: AppState = request.app.state.hybridrec
    return state


def bundle_of(state: AppState) -> Bundle:
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


def arm_bundle_of(state: AppState, user_id: str | None) -> tuple[str | None, Bundle]:
    """`bundle_of` for one user: their A/B arm (None without a test) and its bundle.

    Raises:
        HTTPException: 503 while no model is loaded.
    """
    bundle_of(state)
    return state.arm_bundle(user_id)


async def get_state(request: Request) -> AppState:
    """`state_of` as a dependency."""
    return state_of(request)


async def get_bundle(state: Annotated[AppState, Depends(get_state)]) -> Bundle:
    """`bundle_of` as a dependency (503 while no model is loaded)."""
    return bundle_of(state)


StateDep = Annotated[AppState, Depends(get_state)]
BundleDep = Annotated[Bundle, Depends(get_bundle)]
