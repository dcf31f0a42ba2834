"""``/items``, ``/users`` and ``/users/{user_id}/history``: what a person browses by.

The catalog and the users are those of the served bundle (its saved catalog, the default
model's vocabularies and training matrix); a history adds the events received since
training (the online history every answer folds in). Searches scan the served version's
ids and titles, so they run on the answer pool, off the event loop.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import polars as pl
from fastapi import APIRouter, Path, Query

from hybridrec.bundle import Bundle
from hybridrec.errors import UnknownIdError
from hybridrec.serving.browse_schemas import (
    CatalogItem,
    HistoryItem,
    ItemsPage,
    UserHistoryResponse,
    UsersPage,
    UserSummary,
)
from hybridrec.serving.catalog import CATEGORY_COLUMNS
from hybridrec.serving.deps import BundleDep, StateDep
from hybridrec.serving.events import ID_MAX_LENGTH
from hybridrec.serving.routes.recommend import offload
from hybridrec.serving.schemas import TEXT_PATTERN
from hybridrec.serving.state import AppState

__all__ = ["router"]

router = APIRouter(tags=["catalog"])

MAX_PAGE = 200
Search = Annotated[
    str | None,
    Query(
        max_length=200,
        pattern=TEXT_PATTERN,
        description="Case-insensitive text the id or the title contains.",
    ),
]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Results in this page.")]
#: Beyond any catalog; a bound keeps a huge offset a 422 instead of an overflow.
MAX_OFFSET = 10**9
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Results skipped (pages).")]
Ids = Annotated[
    list[str] | None,
    Query(alias="id", max_length=MAX_PAGE, description="Exactly these items, in this order."),
]
UserId = Annotated[
    str, Path(min_length=1, max_length=ID_MAX_LENGTH, pattern=TEXT_PATTERN, description="A user.")
]


@dataclass(frozen=True)
class _Catalog:
    """A bundle's catalog as the browsing routes read it: one row per item, popular first."""

    #: item_id (as stored), key (its text), title, categories (list), search (lower text).
    table: pl.DataFrame
    row_of: dict[str, int]

    def page(self, rows: pl.DataFrame) -> list[CatalogItem]:
        """``rows`` of `table` as response items."""
        return [
            CatalogItem(item_id=r["item_id"], title=r["title"], categories=r["categories"] or [])
            for r in rows.iter_rows(named=True)
        ]

    def item(self, key: str) -> CatalogItem:
        """The item whose id is ``key`` (an id alone when the catalog lacks it)."""
        n = self.row_of.get(key)
        if n is None:
            return CatalogItem(item_id=key, title=None, categories=[])
        return self.page(self.table[n])[0]


def _categories(items: pl.DataFrame) -> pl.Series:
    column = next((c for c in CATEGORY_COLUMNS if c in items.columns), None)
    if column is None:
        return pl.Series("categories", [[] for _ in range(items.height)], pl.List(pl.String))
    values = items[column]
    if values.dtype == pl.String:
        values = values.str.split("|")
    return values.cast(pl.List(pl.String)).alias("categories")


def _popularity_order(bundle: Bundle, ids: list[Any]) -> np.ndarray[Any, Any] | None:
    """Each id's place in the popularity model's ranking (unknown items last), if any."""
    pop = bundle.get("popularity")
    if pop is None or not hasattr(pop, "ranking"):
        return None
    _, items, _ = pop._fitted()
    _, rank = pop.ranking()
    idx = items.index(np.asarray(ids, dtype=object), missing="mask")
    return np.where(idx >= 0, rank[np.maximum(idx, 0)], len(rank))


def _build(bundle: Bundle) -> _Catalog:
    items = bundle.items
    if items is None or "item_id" not in items.columns:
        # No catalog saved with the version: the items the models know, by id alone.
        items = pl.DataFrame({"item_id": bundle.model()._fitted()[1].to_list()})
    table = pl.DataFrame(
        {
            "item_id": items["item_id"],
            "key": items["item_id"].cast(pl.String),
            "title": items["title"].cast(pl.String)
            if "title" in items.columns
            else pl.Series([None] * items.height, dtype=pl.String),
            "categories": _categories(items),
        }
    ).with_columns(
        search=pl.concat_str(
            [pl.col("key"), pl.col("title").fill_null("")], separator=" "
        ).str.to_lowercase()
    )
    order = _popularity_order(bundle, items["item_id"].to_list())
    if order is not None:
        table = table.with_columns(_order=order).sort("_order", maintain_order=True).drop("_order")
    return _Catalog(table, {key: n for n, key in enumerate(table["key"].to_list())})


_CACHE: weakref.WeakKeyDictionary[Bundle, _Catalog] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _catalog(bundle: Bundle) -> _Catalog:
    with _LOCK:
        found = _CACHE.get(bundle)
        if found is None:
            found = _CACHE[bundle] = _build(bundle)
        return found


def _search_items(
    bundle: Bundle, q: str | None, ids: list[str] | None, limit: int, offset: int
) -> ItemsPage:
    catalog = _catalog(bundle)
    if ids is not None:
        wanted = list(dict.fromkeys(ids))
        found = [catalog.item(i) for i in wanted if i in catalog.row_of]
        missing = [i for i in wanted if i not in catalog.row_of]
        return ItemsPage(total=len(found), items=found, missing=missing)
    rows = catalog.table
    if q and q.strip():
        rows = rows.filter(pl.col("search").str.contains(q.strip().lower(), literal=True))
    return ItemsPage(total=rows.height, items=catalog.page(rows.slice(offset, limit)), missing=[])


@router.get("/items", response_model=ItemsPage)
async def items(
    bundle: BundleDep,
    q: Search = None,
    ids: Ids = None,
    limit: Limit = 20,
    offset: Offset = 0,
) -> ItemsPage:
    """Catalog items whose id or title contains ``q`` (all without it), most popular first.

    With ``id`` (repeated), exactly those items in that order; ids the catalog lacks are
    listed in ``missing``.
    """
    return await offload(_search_items, bundle, q, ids, limit, offset)


def _search_users(bundle: Bundle, q: str | None, limit: int, offset: int) -> UsersPage:
    users, _, user_items = bundle.model()._fitted()
    if q and q.strip():
        needle = q.strip().lower()
        text = np.char.lower(users.ids.astype(str))
        hits = np.flatnonzero(np.char.find(text, needle) >= 0)
    else:
        hits = np.arange(len(users))
    page = hits[offset : offset + limit]
    counts = np.diff(user_items.indptr)[page]
    return UsersPage(
        total=int(hits.size),
        users=[
            UserSummary(user_id=uid, history_items=int(n))
            for uid, n in zip(users.lookup(page).tolist(), counts, strict=True)
        ],
    )


@router.get("/users", response_model=UsersPage)
async def users(bundle: BundleDep, q: Search = None, limit: Limit = 20, offset: Offset = 0) -> Any:
    """Users the served version was trained on whose id contains ``q``, in id order."""
    return await offload(_search_users, bundle, q, limit, offset)


def _history(state: AppState, bundle: Bundle, user_id: str, limit: int) -> UserHistoryResponse:
    users, vocab, user_items = bundle.model()._fitted()
    idx = int(users.index(users.coerce(np.asarray([user_id])), missing="mask")[0])
    online, denied = state.online.get(user_id)
    if idx < 0 and not online and not denied:
        raise UnknownIdError(
            "user",
            [user_id],
            hint=f"not in version {bundle.version}'s training data and no events since",
        )
    # Newest first (the online history keeps the least recently seen first), then training;
    # an item trained on and seen again is shown once, as the event.
    rows = {item: ("online", weight) for item, weight in reversed(online.items())}
    if idx >= 0:
        start, end = user_items.indptr[idx], user_items.indptr[idx + 1]
        trained = vocab.lookup(user_items.indices[start:end]).tolist()
        for item, weight in zip(trained, user_items.data[start:end].tolist(), strict=True):
            rows.setdefault(str(item), ("training", weight))
    catalog = _catalog(bundle)
    shown = [
        HistoryItem(**catalog.item(key).model_dump(), source=source, weight=float(weight))
        for key, (source, weight) in list(rows.items())[:limit]
    ]
    return UserHistoryResponse(
        user_id=user_id,
        known=idx >= 0,
        model_version=bundle.version,
        total=len(rows),
        items=shown,
        disliked=[catalog.item(key) for key in denied],
    )


@router.get(
    "/users/{user_id}/history",
    response_model=UserHistoryResponse,
    responses={404: {"description": "Unknown user (not trained on, no events since)"}},
)
async def user_history(
    state: StateDep, bundle: BundleDep, user_id: UserId, limit: Limit = 50
) -> UserHistoryResponse:
    """The user's items: events received since training (newest first), then training.

    A user the version was not trained on and who sent no events is a 404.
    """
    return await offload(_history, state, bundle, user_id, limit)
