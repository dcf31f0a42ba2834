"""Several sources (catalogs) merged into one set of canonical tables with namespaced ids.

Two shops, or a film catalog and a book catalog, each number their items from 1: item 7
of one is not item 7 of the other. `merge_sources` loads each source's files and prefixes
its item ids with the source name (``films:7``, ``books:7``), so ids never collide; the
merged catalog has a ``source`` column (a categorical feature the two-tower and the
ranker read), and so do the merged interactions. Users are the same people across
sources by default (one account, two catalogs); ``shared_users = false`` namespaces them
too. Configured as::

    [data]
    source = "sources"

    [[data.sources]]
    name = "films"
    interactions = "films/ratings.csv"
    items = "films/movies.csv"

    [[data.sources]]
    name = "books"
    interactions = "books/reads.parquet"
    items = "books/books.parquet"
    columns = { item_id = "isbn" }
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from hybridrec.data.loaders import RawData, load_files
from hybridrec.errors import ConfigError

__all__ = ["SEPARATOR", "Source", "merge_sources", "namespaced"]

#: Between a source's name and its own id.
SEPARATOR = ":"


@dataclass(frozen=True)
class Source:
    """One source: a name (the id prefix) and its files."""

    name: str
    interactions: Path
    items: Path | None = None
    users: Path | None = None
    #: Canonical column -> column in this source's files.
    columns: Mapping[str, str] = field(default_factory=dict)


def namespaced(name: str, column: str) -> pl.Expr:
    """``column`` as text prefixed with ``name`` and `SEPARATOR`."""
    return (pl.lit(f"{name}{SEPARATOR}") + pl.col(column).cast(pl.String)).alias(column)


def _check(sources: Sequence[Source]) -> None:
    if len(sources) < 1:
        raise ConfigError("data.sources: give at least one source")
    seen: set[str] = set()
    for s in sources:
        if not s.name or SEPARATOR in s.name or s.name != s.name.strip():
            raise ConfigError(
                f"data.sources: source name {s.name!r} must be non-empty, without spaces "
                f"around it and without {SEPARATOR!r} (it prefixes the ids)"
            )
        if s.name in seen:
            raise ConfigError(f"data.sources: source name {s.name!r} appears twice")
        seen.add(s.name)


def merge_sources(sources: Sequence[Source], *, shared_users: bool = True) -> RawData:
    """Load every source and merge them: item ids (and user ids unless shared) namespaced.

    Raises:
        ConfigError: Names missing, repeated, or with the separator in them.
        DataError: A source's file cannot be read or fails validation (naming the file).
    """
    _check(sources)
    inter, items, users = [], [], []
    for s in sources:
        raw = load_files(s.interactions, s.items, s.users, columns=dict(s.columns) or None)
        ids = [namespaced(s.name, "item_id")]
        if not shared_users:
            ids.append(namespaced(s.name, "user_id"))
        tag = pl.lit(s.name).alias("source")
        inter.append(raw.interactions.with_columns(*ids, tag))
        if raw.items is not None:
            items.append(raw.items.with_columns(namespaced(s.name, "item_id"), tag))
        if raw.users is not None:
            user_ids = [] if shared_users else [namespaced(s.name, "user_id")]
            users.append(raw.users.with_columns(*user_ids))
    # User ids of one type across sources when shared (a source with text ids makes all text).
    if shared_users and len({f["user_id"].dtype for f in inter}) > 1:
        inter = [f.with_columns(pl.col("user_id").cast(pl.String)) for f in inter]
        users = [f.with_columns(pl.col("user_id").cast(pl.String)) for f in users]
    interactions = pl.concat(inter, how="diagonal_relaxed")
    catalog = pl.concat(items, how="diagonal_relaxed") if items else None
    people = None
    if users:
        # The same person in two sources: their first source's attributes win.
        people = pl.concat(users, how="diagonal_relaxed").unique(
            "user_id", keep="first", maintain_order=True
        )
    return RawData(
        name="+".join(s.name for s in sources),
        interactions=interactions,
        items=catalog,
        users=people,
    )
