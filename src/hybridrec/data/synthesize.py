"""Writing large synthetic event logs to disk, chunk by chunk, for benchmarks at scale.

`synthetic` builds small tables in memory for tests; this module writes logs of any length
(hundreds of millions of rows) with memory bounded by one chunk: each chunk is drawn with its
own seeded numpy generator and streamed to Parquet (``pyarrow.parquet.ParquetWriter``) or
appended to a CSV file.

The log looks like real feedback: item popularity and user activity follow power laws
(``rank ** -skew``; ranks are shuffled over the ids so popular items are not simply the
smallest ids), (user, item) pairs may repeat (repeated views, as in a click log), timestamps
run forward through a period so the log is in time order (and so increasing per user), and
an optional ``rating`` column holds explicit 1-5 ratings skewed to the top. The item file
holds ``item_id, title, categories, text`` with generated words.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hybridrec.errors import ConfigError

__all__ = ["SynthesizedLog", "synthesize_log"]

LogFormat = Literal["parquet", "csv"]

#: Default period the timestamps cover: one year, from 2021-01-01 UTC.
START_TIME = 1_609_459_200
PERIOD_SECONDS = 365 * 86_400
_GENRES = (
    "action", "adventure", "comedy", "drama", "fantasy", "horror", "mystery", "romance",
    "science", "thriller", "history", "music", "sports", "travel", "cooking", "nature",
    "family", "crime", "biography", "poetry",
)  # fmt: skip
_SYLLABLES = (
    "ka", "lo", "mi", "ren", "sa", "tor", "vel", "an", "bri", "dun", "el", "fa", "gor",
    "hal", "is", "jun", "kor", "lu", "mar", "nel", "or", "pen", "qua", "ros", "sil", "tam",
    "ur", "vin", "wen", "xi", "yor", "zan",
)  # fmt: skip
#: Share of ratings 1..5 (explicit logs lean to the top of the scale).
_RATING_P = (0.05, 0.1, 0.2, 0.35, 0.3)


@dataclass(frozen=True)
class SynthesizedLog:
    """What `synthesize_log` wrote.

    Attributes:
        interactions: The event log file.
        items: The item catalog file.
        rows: Rows in the log.
        users: Distinct users with at least one row.
        items_with_events: Distinct items with at least one row.
        top_item_share: Share of the rows that the most popular 1% of items hold.
        columns: The log's columns.
    """

    interactions: Path
    items: Path
    rows: int
    users: int
    items_with_events: int
    top_item_share: float
    columns: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line on what was written."""
        return (
            f"wrote {self.rows:,} interactions ({', '.join(self.columns)}) of {self.users:,} "
            f"users and {self.items_with_events:,} items to {self.interactions}; the top 1% "
            f"of items hold {self.top_item_share:.0%} of them; catalog: {self.items}"
        )


def _power_law_cdf(n: int, skew: float, rng: np.random.Generator) -> NDArray[np.float64]:
    """Cumulative probabilities over ids 0..n-1 of a ``rank ** -skew`` law, ranks shuffled."""
    weights = np.arange(1, n + 1, dtype=np.float64) ** -skew
    weights = weights[rng.permutation(n)]
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    return cdf


def _draw(cdf: NDArray[np.float64], size: int, rng: np.random.Generator) -> NDArray[np.int64]:
    # Inverse-CDF sampling: O(size log n), no per-draw setup (Generator.choice with p is
    # O(n) per call and copies p).
    idx = np.searchsorted(cdf, rng.random(size), side="right")
    out: NDArray[np.int64] = np.minimum(idx, cdf.size - 1).astype(np.int64)
    return out


def _ids(values: NDArray[np.int64], prefix: str, string_ids: bool) -> pa.Array:
    if not string_ids:
        return pa.array(values, type=pa.int64())
    return pa.array(np.char.add(prefix, values.astype(str)), type=pa.string())


def _words(rng: np.random.Generator, shape: tuple[int, int]) -> NDArray[np.str_]:
    """Generated words (two or three syllables), drawn with a skew so some words are common."""
    syl = np.asarray(_SYLLABLES)
    cdf = _power_law_cdf(syl.size, 0.7, rng)
    a, b, c = (syl[_draw(cdf, shape[0] * shape[1], rng)] for _ in range(3))
    three = rng.random(a.size) < 0.4
    out = np.char.add(np.char.add(a, b), np.where(three, c, ""))
    return out.reshape(shape)


class _Sink:
    """Appends Arrow tables to one Parquet or CSV file, written aside and renamed at the end."""

    def __init__(self, path: Path, fmt: LogFormat, schema: pa.Schema) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.fmt = fmt
        self.first = True
        if fmt == "parquet":
            self.parquet: pq.ParquetWriter | None = pq.ParquetWriter(self.tmp, schema)
        else:
            self.parquet = None
            self.csv = self.tmp.open("wb")

    def write(self, table: pa.Table) -> None:
        if self.parquet is not None:
            self.parquet.write_table(table)
        else:
            pl.from_arrow(table).write_csv(self.csv, include_header=self.first)  # type: ignore[union-attr]
        self.first = False

    def close(self, *, ok: bool) -> None:
        if self.parquet is not None:
            self.parquet.close()
        else:
            self.csv.close()
        if ok:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


@contextmanager
def _sink(path: Path, fmt: LogFormat, schema: pa.Schema) -> Iterator[_Sink]:
    sink = _Sink(path, fmt, schema)
    try:
        yield sink
    except BaseException:
        sink.close(ok=False)
        raise
    sink.close(ok=True)


def _catalog_chunk(start: int, stop: int, n_genres: int, seed: int, string_ids: bool) -> pa.Table:
    rng = np.random.default_rng([seed, 1, start])
    n = stop - start
    ids = np.arange(start, stop, dtype=np.int64)
    genres = np.asarray(_GENRES[:n_genres])
    main = rng.integers(0, genres.size, size=n)
    second = rng.integers(0, genres.size, size=n)
    both = (rng.random(n) < 0.4) & (second != main)
    categories = np.where(
        both, np.char.add(np.char.add(genres[main], "|"), genres[second]), genres[main]
    )
    title_words = _words(rng, (n, 3))
    n_title = rng.integers(1, 4, size=n)
    titles = [" ".join(row[:k]).title() for row, k in zip(title_words, n_title, strict=True)]
    # Text mentions the main genre, so content models have a signal to find.
    text_words = _words(rng, (n, 12))
    text = [
        f"{' '.join(row[:6])} {g} {' '.join(row[6:])}"
        for row, g in zip(text_words, genres[main], strict=True)
    ]
    return pa.table(
        {
            "item_id": _ids(ids, "i", string_ids),
            "title": pa.array(titles, type=pa.string()),
            "categories": pa.array(categories.tolist(), type=pa.string()),
            "text": pa.array(text, type=pa.string()),
        }
    )


def _progress(console: Console | None) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=console is None,
        transient=True,
    )


def synthesize_log(
    out_dir: str | Path,
    *,
    users: int,
    items: int,
    interactions: int,
    item_skew: float = 1.0,
    user_skew: float = 0.8,
    ratings: bool = False,
    string_ids: bool = False,
    fmt: LogFormat = "parquet",
    chunk_rows: int = 2_000_000,
    start_time: int = START_TIME,
    period_seconds: int = PERIOD_SECONDS,
    seed: int = 0,
    console: Console | None = None,
) -> SynthesizedLog:
    """Write a synthetic event log and its item catalog to ``out_dir``.

    Memory is bounded by ``chunk_rows`` (and the users' and items' probability tables), not
    by ``interactions``: every chunk is drawn with a generator seeded by (``seed``, chunk),
    so the same arguments write the same files whatever the machine.

    Args:
        out_dir: Directory for ``interactions.parquet`` (or ``.csv``) and ``items.parquet``
            (or ``.csv``); created when missing; files there of the same names are replaced.
        users: Number of user ids (ids ``0..users-1``, or ``u0``... with ``string_ids``).
        items: Number of item ids (``0..items-1``, or ``i0``...).
        interactions: Rows to write.
        item_skew: Exponent of item popularity (``rank ** -item_skew``; 0: uniform).
        user_skew: Exponent of user activity.
        ratings: Add a ``rating`` column (integers 1-5) so the log reads as explicit.
        string_ids: Text ids instead of integers.
        fmt: ``parquet`` or ``csv``.
        chunk_rows: Rows drawn and written at a time.
        start_time: Unix seconds of the first event.
        period_seconds: Span of the timestamps.
        seed: Random seed.
        console: Where to show progress (None: silent).

    Returns:
        What was written, with counts.

    Raises:
        ConfigError: A size is not positive, a skew is negative, or the format is unknown.
    """
    for name, value in (
        ("users", users),
        ("items", items),
        ("interactions", interactions),
        ("chunk_rows", chunk_rows),
        ("period_seconds", period_seconds),
    ):
        if value < 1:
            raise ConfigError(f"synthesize: {name} must be at least 1 (got {value})")
    if item_skew < 0 or user_skew < 0:
        raise ConfigError(
            f"synthesize: skews must be >= 0 (got item_skew={item_skew}, user_skew={user_skew})"
        )
    if fmt not in ("parquet", "csv"):
        raise ConfigError(f"synthesize: unknown format {fmt!r}; valid: parquet, csv")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suffix = ".parquet" if fmt == "parquet" else ".csv"
    log_path, items_path = out / f"interactions{suffix}", out / f"items{suffix}"

    setup = np.random.default_rng([seed, 0])
    item_cdf = _power_law_cdf(items, item_skew, setup)
    user_cdf = _power_law_cdf(users, user_skew, setup)
    id_type = pa.string() if string_ids else pa.int64()
    fields = [("user_id", id_type), ("item_id", id_type), ("timestamp", pa.int64())]
    if ratings:
        fields.append(("rating", pa.int8()))
    schema = pa.schema(fields)
    user_counts = np.zeros(users, dtype=np.int64)
    item_counts = np.zeros(items, dtype=np.int64)
    n_chunks = -(-interactions // chunk_rows)
    item_chunk = 500_000

    with _progress(console) as progress:
        task = progress.add_task("interactions", total=interactions)
        with _sink(log_path, fmt, schema) as sink:
            for c in range(n_chunks):
                rng = np.random.default_rng([seed, 2, c])
                lo = c * chunk_rows
                n = min(chunk_rows, interactions - lo)
                u = _draw(user_cdf, n, rng)
                i = _draw(item_cdf, n, rng)
                # Chunk c covers its slice of the period; sorted within, so the whole log is
                # in time order and every user's events come in increasing time.
                t0 = start_time + period_seconds * lo // interactions
                t1 = start_time + period_seconds * (lo + n) // interactions
                ts = np.sort(rng.integers(t0, max(t1, t0 + 1), size=n, dtype=np.int64))
                _bincount_into(user_counts, u)
                _bincount_into(item_counts, i)
                columns: dict[str, pa.Array] = {
                    "user_id": _ids(u, "u", string_ids),
                    "item_id": _ids(i, "i", string_ids),
                    "timestamp": pa.array(ts, type=pa.int64()),
                }
                if ratings:
                    r = rng.choice(5, size=n, p=_RATING_P).astype(np.int8) + 1
                    columns["rating"] = pa.array(r, type=pa.int8())
                sink.write(pa.table(columns, schema=schema))
                progress.advance(task, n)
        task = progress.add_task("items", total=items)
        catalog_schema = pa.schema(
            [("item_id", id_type), ("title", pa.string()), ("categories", pa.string()),
             ("text", pa.string())]
        )  # fmt: skip
        with _sink(items_path, fmt, catalog_schema) as sink:
            for start in range(0, items, item_chunk):
                stop = min(items, start + item_chunk)
                sink.write(_catalog_chunk(start, stop, len(_GENRES), seed, string_ids))
                progress.advance(task, stop - start)

    top = max(1, items // 100)
    share = float(np.sort(item_counts)[::-1][:top].sum() / interactions)
    return SynthesizedLog(
        interactions=log_path,
        items=items_path,
        rows=interactions,
        users=int(np.count_nonzero(user_counts)),
        items_with_events=int(np.count_nonzero(item_counts)),
        top_item_share=share,
        columns=[f.name for f in schema],
    )


def _bincount_into(counts: NDArray[np.int64], ids: NDArray[np.int64]) -> None:
    counts += np.bincount(ids, minlength=counts.size)
