"""``/events`` and ``/feedback``: interactions as they happen, stored before acknowledged.

During an A/B test each row is stored with its user's arm, assigned here (the client does
not send it), so that the report attributes it to the version that user was served.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, status
from pydantic import Field

from hybridrec.serving import metrics
from hybridrec.serving.deps import StateDep
from hybridrec.serving.events import DatabaseUnavailableError, EventRow, FeedbackRow, now
from hybridrec.serving.routes.recommend import promptly
from hybridrec.serving.schemas import (
    DEFAULT_WEIGHTS,
    MAX_BATCH,
    EventIn,
    EventsAccepted,
    EventType,
    FeedbackAccepted,
    FeedbackIn,
)
from hybridrec.serving.state import AppState

__all__ = ["router"]

router = APIRouter(tags=["events"])

_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"description": "The event store is unavailable; nothing was stored."}
}

EventsBody = Annotated[
    EventIn | Annotated[list[EventIn], Field(min_length=1, max_length=MAX_BATCH)],
    Body(description=f"One event, or a list of up to {MAX_BATCH}."),
]


def _seconds(ts: datetime | None, default: float) -> float:
    if ts is None:
        return default
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.timestamp()


def _row(ev: EventIn, received: float, state: AppState) -> EventRow:
    weight = ev.weight if ev.weight is not None else DEFAULT_WEIGHTS[ev.event_type]
    if ev.event_type is EventType.dislike:
        weight = 0.0
    user_id = str(ev.user_id)
    return EventRow(
        user_id=user_id,
        item_id=str(ev.item_id),
        event_type=ev.event_type.value,
        weight=float(weight),
        ts=_seconds(ev.timestamp, received),
        received_at=received,
        arm=state.arm_of(user_id),
    )


def _unavailable(exc: DatabaseUnavailableError) -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc))


@router.post(
    "/events",
    response_model=EventsAccepted,
    status_code=status.HTTP_201_CREATED,
    responses=_UNAVAILABLE,
)
async def post_events(state: StateDep, body: EventsBody) -> EventsAccepted:
    """Store interactions, committed before the answer, and apply them online.

    Each user's next recommendation folds them in and excludes the items.
    """
    return await promptly(_store_events, state, body)


def _store_events(state: AppState, body: EventIn | list[EventIn]) -> EventsAccepted:
    received = now()
    batch = body if isinstance(body, list) else [body]
    rows = [_row(ev, received, state) for ev in batch]
    try:
        stored = state.store.add_events(rows)
    except DatabaseUnavailableError as exc:
        raise _unavailable(exc) from None
    state.online.apply(stored)
    for row in stored:
        metrics.EVENTS.labels(row.event_type).inc()
    return EventsAccepted(accepted=len(stored), ids=[row.id for row in stored])


@router.post(
    "/feedback",
    response_model=FeedbackAccepted,
    status_code=status.HTTP_201_CREATED,
    responses=_UNAVAILABLE,
)
async def post_feedback(state: StateDep, body: FeedbackIn) -> FeedbackAccepted:
    """Store a thumbs up (a ``like``) or down (a ``dislike``: never recommended again)."""
    return await promptly(_store_feedback, state, body)


def _store_feedback(state: AppState, body: FeedbackIn) -> FeedbackAccepted:
    received = now()
    ts = _seconds(body.timestamp, received)
    kind = EventType.like if body.value == "up" else EventType.dislike
    user_id = str(body.user_id)
    arm = state.arm_of(user_id)
    row = FeedbackRow(
        user_id=user_id,
        item_id=str(body.item_id),
        value=body.value,
        source=body.source,
        model_version=body.model_version,
        ts=ts,
        received_at=received,
        arm=arm,
    )
    event = EventRow(
        user_id=row.user_id,
        item_id=row.item_id,
        event_type=kind.value,
        weight=DEFAULT_WEIGHTS[kind],
        ts=ts,
        received_at=received,
        arm=arm,
    )
    try:
        fid, stored = state.store.add_feedback(row, event)
    except DatabaseUnavailableError as exc:
        raise _unavailable(exc) from None
    state.online.apply([stored])
    metrics.EVENTS.labels(f"feedback_{body.value}").inc()
    return FeedbackAccepted(id=fid, event_id=stored.id)
