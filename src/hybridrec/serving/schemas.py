"""Request and response bodies of the HTTP API (pydantic; they make the OpenAPI schema).

Requests reject unknown fields, so a typo is a 422 that names the field. Ids may be given as
JSON strings or integers; they are compared as text.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from hybridrec.serving.events import ID_MAX_LENGTH, LABEL_MAX_LENGTH
from hybridrec.serving.strategies import SimilarMethod, Strategy

__all__ = [
    "TEXT_PATTERN",
    "AnswerOptions",
    "EventIn",
    "EventType",
    "EventsAccepted",
    "FeedbackAccepted",
    "FeedbackIn",
    "HealthResponse",
    "ModelShapes",
    "ReadyResponse",
    "RecommendationResponse",
    "RecommendedItem",
    "ReloadResponse",
    "SimilarMethod",
    "SimilarResponse",
    "Strategy",
    "VisitorRequest",
]

#: Printable text without control characters (PostgreSQL text cannot hold NUL). Lone UTF-16
#: surrogates never get here: the body check (`serving.limits`) answers them 422.
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]+$"
IdText = Annotated[
    str, StringConstraints(min_length=1, max_length=ID_MAX_LENGTH, pattern=TEXT_PATTERN)
]
#: The largest integer id whose text fits the store's id columns.
_MAX_INT_ID = 10 ** (ID_MAX_LENGTH - 1) - 1
IdInt = Annotated[StrictInt, Field(ge=-_MAX_INT_ID, le=_MAX_INT_ID)]
#: An external id: a JSON string or integer (its text at most `ID_MAX_LENGTH` characters).
ExternalId = Annotated[IdInt | IdText, Field(description="An id, as a string or integer.")]
Label = Annotated[
    str, StringConstraints(min_length=1, max_length=LABEL_MAX_LENGTH, pattern=TEXT_PATTERN)
]
MAX_K = 1000
MAX_BATCH = 1000


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventType(StrEnum):
    """Kinds of interaction, with the weight each gets when none is given."""

    view = "view"
    click = "click"
    add_to_cart = "add_to_cart"
    purchase = "purchase"
    rating = "rating"
    like = "like"
    dislike = "dislike"


#: Default weight per event type (``dislike`` is never a positive interaction).
DEFAULT_WEIGHTS: dict[EventType, float] = {
    EventType.view: 1.0,
    EventType.click: 1.0,
    EventType.add_to_cart: 2.0,
    EventType.purchase: 3.0,
    EventType.rating: 1.0,
    EventType.like: 2.0,
    EventType.dislike: 0.0,
}


class EventIn(_Request):
    """One interaction as it happened."""

    user_id: ExternalId
    item_id: ExternalId
    event_type: EventType = EventType.view
    weight: float | None = Field(
        default=None,
        gt=0,
        le=1e6,
        allow_inf_nan=False,
        description="Strength (default by type: view/click 1, add_to_cart 2, purchase 3, "
        "like 2; ignored for dislike).",
    )
    timestamp: datetime | None = Field(
        default=None, description="When it happened (ISO 8601 or Unix seconds; default: now)."
    )


class EventsAccepted(BaseModel):
    """Events stored (committed) and applied to the online history."""

    accepted: int
    ids: list[int]


class FeedbackIn(_Request):
    """A thumbs up or down on an item the service recommended."""

    user_id: ExternalId
    item_id: ExternalId
    value: Literal["up", "down"]
    source: Label | None = Field(
        default=None, description="The method that recommended the item (its `method`)."
    )
    model_version: (
        Annotated[str, StringConstraints(max_length=ID_MAX_LENGTH, pattern=TEXT_PATTERN)] | None
    ) = None
    timestamp: datetime | None = None


class FeedbackAccepted(BaseModel):
    """Feedback stored; ``event_id`` is the interaction it implies (like / dislike)."""

    id: int
    event_id: int


class AnswerOptions(BaseModel):
    """How to answer: size, strategy and business rules (the CLI's names and meaning).

    The query of ``/recommend/user/{user_id}`` (unknown parameters ignored, as for any
    route) and the rule part of a visitor's body.
    """

    k: int = Field(default=10, ge=1, le=MAX_K, description="How many items.")
    strategy: Strategy = Field(
        default=Strategy.auto, description="auto uses the router; missing models fall back."
    )
    alpha: float = Field(
        default=0.8, ge=0.0, le=1.0, description="mixed: weight of ALS against popularity."
    )
    exclude_seen: bool = Field(default=True, description="Leave out items the user has.")
    category: list[Label] | None = Field(
        default=None, max_length=20, description="Only items of these categories."
    )
    exclude_category: list[Label] | None = Field(
        default=None, max_length=20, description="No items of these categories."
    )
    min_popularity: int | None = Field(
        default=None, ge=0, description="Only items with at least this many interactions."
    )
    mmr: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Diversity re-ranking lambda (1 = relevance only).",
    )
    explain: bool = Field(default=True, description="Attach reasons to every item.")
    model: Label | None = Field(
        default=None,
        description="Ask this model of the served version first (any pipeline model by its "
        "name, e.g. an ensemble), instead of the strategy's; then the fallback chain.",
    )


class VisitorRequest(AnswerOptions, _Request):
    """A visitor without a user id: what they looked at recently, best guess first."""

    item_ids: list[ExternalId] = Field(
        default_factory=list, max_length=500, description="Recently seen items, any order."
    )
    attributes: dict[Label, str | float | bool | None] | None = Field(
        default=None,
        max_length=50,
        description="Visitor attributes (column -> value, as in the training users table): a "
        "two-tower model with user features answers from them without retraining.",
    )
    allow: list[ExternalId] | None = Field(
        default=None, max_length=10_000, description="Only these items."
    )
    deny: list[ExternalId] | None = Field(
        default=None, max_length=10_000, description="Never these items."
    )
    visitor_id: ExternalId | None = Field(
        default=None,
        description="A stable id of the visitor (a cookie, say): during an A/B test it picks "
        "their arm, as a user id does; without one a visitor gets arm A.",
    )


class RecommendedItem(BaseModel):
    """One recommended (or similar) item."""

    item_id: int | str
    title: str | None
    score: float
    rank: int
    method: str
    reasons: list[str]


class RecommendationResponse(BaseModel):
    """A ranked list and how it was made."""

    user_id: str | None
    strategy: Strategy
    method_used: str
    cold_start: bool
    fallback: bool
    model_version: str
    k: int
    history_items: int
    items: list[RecommendedItem]
    notes: list[str]
    arm: str | None = Field(
        default=None,
        description="The user's A/B arm (A: the current version, B: the tested one); null "
        "when no test runs. ``model_version`` is the arm's version.",
    )


class SimilarResponse(BaseModel):
    """Items similar to one item."""

    item_id: str
    method: SimilarMethod
    method_used: str
    model_version: str
    k: int
    items: list[RecommendedItem]
    notes: list[str]


class HealthResponse(BaseModel):
    """Liveness and what is being served."""

    status: Literal["ok", "loading"]
    ready: bool
    model_version: str | None
    created_at: str | None
    default_model: str | None
    models: list[str]
    users: int | None
    items: int | None
    loaded_parts: list[str]
    uptime_seconds: float
    database: Literal["ok", "unavailable"]
    database_backend: str
    online_users: int
    last_reload: dict[str, Any] | None


class ReadyResponse(BaseModel):
    """Readiness."""

    ready: bool
    model_version: str | None


class ReloadResponse(BaseModel):
    """What a reload did."""

    ok: bool
    version: str | None
    previous: str | None
    seconds: float
    error: str | None


class ModelShapes(BaseModel):
    """Array, index and vocabulary shapes of the loaded models."""

    version: str
    loaded_parts: list[str]
    models: dict[str, dict[str, list[int]]]
    not_loaded: list[str]
