"""Writing prepared interactions for trainers outside hybridrec (Spark, implicit scripts...).

The export directory is laid out so that what an external trainer produces can come straight
back through `hybridrec.bundle.importer.import_loose` (``hybridrec bundle import``):

===========================  =================================================================
``interactions.{fmt}``       ``user_id, item_id, weight[, timestamp], user_index, item_index``:
                             one row per (user, item), implicit weights, sorted by (user, item)
``user_ids.{fmt}``           ``index, id``: row ``index`` of the user factors is user ``id``
``item_ids.{fmt}``           ``index, id``: row ``index`` of the item factors is item ``id``
``items.{fmt}``              the catalog, when the data has one
===========================  =================================================================

Indices are the positions of the ids in sorted order, the same vocabulary hybridrec's models
use (`hybridrec.data.vocab.Vocab`). A trainer writes ``user_factors.npy`` and
``item_factors.npy`` in index order (or Spark's ``id, features`` tables) into the same
directory, and ``bundle import`` reads factors, ids, history and catalog from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from hybridrec.errors import ConfigError, DataError

__all__ = ["ExportFormat", "ExportResult", "export_interactions"]

ExportFormat = Literal["parquet", "csv"]


@dataclass(frozen=True)
class ExportResult:
    """What `export_interactions` wrote."""

    directory: Path
    files: dict[str, Path]
    rows: int
    users: int
    items: int

    def describe(self) -> str:
        """One line on what was written."""
        names = ", ".join(p.name for p in self.files.values())
        return (
            f"wrote {self.rows:,} interactions of {self.users:,} users and {self.items:,} "
            f"items to {self.directory} ({names})"
        )


def _write(df: pl.DataFrame | pl.LazyFrame, path: Path, fmt: ExportFormat) -> None:
    """Written aside and renamed, so a reader never sees half a file.

    A lazy frame is streamed to the file (``sink_*``): the table never exists in memory.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if isinstance(df, pl.LazyFrame):
            if fmt == "parquet":
                df.sink_parquet(tmp)
            else:
                df.sink_csv(tmp)
        elif fmt == "parquet":
            df.write_parquet(tmp)
        else:
            df.write_csv(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _flat(df: pl.DataFrame) -> pl.DataFrame:
    """List-of-text columns as ``|``-joined text (what the item loader splits back)."""
    lists = [c for c, t in df.schema.items() if isinstance(t, pl.List)]
    return df.with_columns(pl.col(c).cast(pl.List(pl.String)).list.join("|") for c in lists)


def export_interactions(
    interactions: pl.DataFrame,
    out_dir: str | Path,
    *,
    fmt: ExportFormat = "parquet",
    items: pl.DataFrame | None = None,
) -> ExportResult:
    """Write canonical interactions with their index columns and id mappings.

    Args:
        interactions: Canonical, implicit, deduplicated interactions (what
            `hybridrec.pipeline.train.prepare_data` returns).
        out_dir: Directory to write into (created when missing).
        fmt: ``parquet`` or ``csv``.
        items: The catalog, written beside when given.

    Returns:
        The files written and their counts.

    Raises:
        ConfigError: An unknown format.
        DataError: No interactions.
    """
    if fmt not in ("parquet", "csv"):
        raise ConfigError(f"export: unknown format {fmt!r}; valid: parquet, csv")
    if interactions.height == 0:
        raise DataError("export: no interactions to write")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Sorted distinct ids: index i is the i-th smallest id, as in Vocab.
    user_ids = interactions["user_id"].unique().sort()
    item_ids = interactions["item_id"].unique().sort()
    columns = ["user_id", "item_id", "weight"]
    if interactions["timestamp"].null_count() < interactions.height:
        columns.append("timestamp")
    maps = {
        kind: pl.DataFrame(
            {"index": pl.int_range(ids.len(), dtype=pl.Int32, eager=True), "id": ids}
        )
        for kind, ids in (("user", user_ids), ("item", item_ids))
    }
    # Joined and written in streaming batches: at 50M rows building the table whole would
    # be the largest allocation of the whole preparation.
    table = interactions.lazy().select(*columns).with_columns(pl.col("weight").cast(pl.Float32))
    for kind, mapping in maps.items():
        index = mapping.lazy().rename({"id": f"{kind}_id", "index": f"{kind}_index"})
        table = table.join(index, on=f"{kind}_id", how="left", maintain_order="left")
    suffix = ".parquet" if fmt == "parquet" else ".csv"
    files = {
        "interactions": out / f"interactions{suffix}",
        "user_ids": out / f"user_ids{suffix}",
        "item_ids": out / f"item_ids{suffix}",
    }
    _write(table, files["interactions"], fmt)
    for kind, mapping in maps.items():
        _write(mapping, files[f"{kind}_ids"], fmt)
    if items is not None:
        files["items"] = out / f"items{suffix}"
        _write(items if fmt == "parquet" else _flat(items), files["items"], fmt)
    return ExportResult(out, files, interactions.height, user_ids.len(), item_ids.len())
