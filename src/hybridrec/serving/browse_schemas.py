"""Response bodies of the routes a person browses with: catalog, users, history, versions.

The web UI (`hybridrec.ui`) reads these; they are plain HTTP routes like any other, in the
OpenAPI schema at ``/docs``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from hybridrec.serving.events import ID_MAX_LENGTH
from hybridrec.serving.schemas import TEXT_PATTERN, SimilarMethod, Strategy

__all__ = [
    "CatalogItem",
    "HistoryItem",
    "ItemsPage",
    "ModelInfo",
    "ModelMetrics",
    "RollbackRequest",
    "RollbackResponse",
    "UserAttribute",
    "UserHistoryResponse",
    "UserSummary",
    "UsersPage",
    "VersionInfo",
    "VersionsResponse",
]


class CatalogItem(BaseModel):
    """An item of the served version's catalog."""

    item_id: int | str
    title: str | None
    categories: list[str]


class ItemsPage(BaseModel):
    """Catalog items matching a search, most popular first, one page of them."""

    total: int = Field(description="Items matching, over all pages.")
    items: list[CatalogItem]
    missing: list[str] = Field(description="Ids asked for by ``id`` that the catalog lacks.")


class UserSummary(BaseModel):
    """A user the served version was trained on."""

    user_id: int | str
    history_items: int = Field(description="Items in the user's training history.")


class UsersPage(BaseModel):
    """Known users matching a search, one page of them."""

    total: int
    users: list[UserSummary]


class HistoryItem(CatalogItem):
    """An item of a user's history."""

    source: Literal["training", "online"] = Field(
        description="training: in the data the version was trained on; online: an event "
        "received since (newest first)."
    )
    weight: float


class UserHistoryResponse(BaseModel):
    """What the models know a user by: training items and events received since."""

    user_id: str
    known: bool = Field(description="The served version was trained on this user.")
    model_version: str
    total: int = Field(description="Items in the history (the list may show fewer).")
    items: list[HistoryItem]
    disliked: list[CatalogItem] = Field(description="Thumbs-down items, never recommended.")


class ModelMetrics(BaseModel):
    """One model's offline evaluation."""

    metrics: dict[str, float | None] = Field(description="Metric@K over all test users.")
    segments: dict[str, dict[str, float | None]] = Field(
        description="Segment (cold, warm, hot: training-history length) → metric@K and users."
    )
    users: int


class UserAttribute(BaseModel):
    """A user attribute a model of the version reads: what a visitor may send as ``attributes``."""

    name: str
    kind: Literal["categorical", "numeric"]
    values: list[str] = Field(
        default_factory=list,
        description="Categorical: the values the model knows (most frequent first, capped).",
    )
    models: list[str] = Field(description="The models that read it (two_tower, ...).")


class ModelInfo(BaseModel):
    """The served version: identity, data, offline metrics; what may be asked of it."""

    version: str
    created_at: str | None
    default_model: str
    models: dict[str, str] = Field(description="Model name → its kind (als, content...).")
    data: dict[str, int | str | None] = Field(
        description="What it was trained on: source, rows, users, items."
    )
    evaluated: bool
    target: str | None = Field(description="The metric models are compared on (ndcg@10).")
    metrics: dict[str, ModelMetrics]
    notes: list[str]
    strategies: list[Strategy]
    similar_methods: list[SimilarMethod]
    user_attributes: list[UserAttribute] = Field(
        default_factory=list,
        description="Attributes a visitor may send (POST /recommend ``attributes``): the "
        "columns of the training users table that a model reads; empty when none does.",
    )


class VersionInfo(BaseModel):
    """One version of the model store."""

    version: str
    created_at: str
    default_model: str
    models: list[str]
    value: float | None = Field(description="The default model's target metric, if evaluated.")
    current: bool = Field(description="The store's ``current`` pointer names it.")
    served: bool = Field(description="This server process serves it.")


class VersionsResponse(BaseModel):
    """The store's versions, oldest first."""

    target: str | None
    current: str | None
    served: str
    versions: list[VersionInfo]


class RollbackRequest(BaseModel):
    """What the client saw as current: the rollback happens only if it still is."""

    model_config = ConfigDict(extra="forbid")

    current: Annotated[
        str, StringConstraints(min_length=1, max_length=ID_MAX_LENGTH, pattern=TEXT_PATTERN)
    ] = Field(
        description="The store's current version as the client last saw it; another one "
        "(a rollback or promotion meanwhile, a second click) is refused with 409."
    )


class RollbackResponse(BaseModel):
    """What a rollback did: the store's ``current`` moved back, then the server reloaded."""

    ok: bool = Field(description="The version rolled back to is served now.")
    rolled_back_from: str | None
    current: str
    served: str | None
    seconds: float
    error: str | None


class ABReport(BaseModel):
    """The A/B test running (else the one ended last), as ``hybridrec ab report`` gives it."""

    test: bool = Field(description="Whether the store has an A/B test at all.")
    active: bool = Field(default=False, description="Whether the test still runs.")
    started_at: float | None = Field(default=None, description="Unix seconds.")
    ended_at: float | None = Field(default=None, description="Unix seconds (None: running).")
    arms: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per arm: what it serves, its share, users, impressions, and each online "
        "rate with its 95% Wilson interval.",
    )
    b_minus_a: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per rate: B − A, its 95% interval, which is better."
    )
    srm: dict[str, Any] = Field(
        default_factory=dict, description="Sample-ratio check: users per arm, p-value, mismatch."
    )


class DecisionsResponse(BaseModel):
    """Retraining decisions recorded in the store, newest first."""

    decisions: list[dict[str, Any]] = Field(
        description="Each: when, deployed or kept (or failed), why, both versions, both "
        "target metrics and the bootstrap interval of the difference."
    )
