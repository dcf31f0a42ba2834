"""Catalog lookups the service needs per bundle: titles, and the items of a category.

Built once per served bundle, on first use, from the catalog saved with the version.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import Any

import polars as pl

from hybridrec.bundle import Bundle

__all__ = ["CATEGORY_COLUMNS", "Catalog", "catalog_of"]

CATEGORY_COLUMNS = ("categories", "genres", "category")


class Catalog:
    """Titles and category membership of a bundle's items (item ids compared as text)."""

    def __init__(self, items: pl.DataFrame | None) -> None:
        self.titles: dict[str, str] = {}
        self.categories: dict[str, list[Any]] = {}
        if items is None or "item_id" not in items.columns:
            return
        ids = items["item_id"].to_list()
        if "title" in items.columns:
            self.titles = {
                str(i): str(t) for i, t in zip(ids, items["title"].to_list(), strict=True) if t
            }
        column = next((c for c in CATEGORY_COLUMNS if c in items.columns), None)
        if column is None:
            return
        values = items[column]
        if values.dtype == pl.String:
            values = values.str.split("|")
        for item, cats in zip(ids, values.to_list(), strict=True):
            for cat in cats or ():
                if cat:
                    self.categories.setdefault(str(cat).strip().lower(), []).append(item)

    def title(self, item_id: Any) -> str | None:
        """The item's title, if the catalog has one."""
        return self.titles.get(str(item_id))

    def in_categories(self, names: Iterable[str]) -> list[Any]:
        """Items in any of the categories ``names`` (case-insensitive)."""
        out: list[Any] = []
        for name in names:
            out.extend(self.categories.get(name.strip().lower(), ()))
        return out


_CACHE: weakref.WeakKeyDictionary[Bundle, Catalog] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def catalog_of(bundle: Bundle) -> Catalog:
    """The `Catalog` of ``bundle``, built once."""
    found = _CACHE.get(bundle)
    if found is not None:
        return found
    with _LOCK:
        found = _CACHE.get(bundle)
        if found is None:
            found = Catalog(bundle.items)
            _CACHE[bundle] = found
        return found
