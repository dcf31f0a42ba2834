"""Data shapes a user may bring, made from one dataset: for tests and benchmarks.

The first release was measured on MovieLens latest-small with its own split only; these
shapes are how the project checks that defaults hold on other kinds of files:

- ``ratings``: explicit ratings as they are, a random 20% of each user's rows held out;
- ``no_ratings``: the same rows with the rating column removed (clicks, check-ins);
- ``leave_last_one_out``: each user's latest interaction is the test, the rest training;
- ``string_ids``: ``ratings`` with UUID-like user and item ids (catalog ids mapped alike).

Each is written as ``train``/``test`` files plus the catalog, with canonical column names.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from hybridrec.errors import ConfigError

__all__ = ["SHAPES", "ShapeFiles", "write_shape"]

SHAPES = ("ratings", "no_ratings", "leave_last_one_out", "string_ids")


@dataclass(frozen=True)
class ShapeFiles:
    """Where one shape's files were written."""

    name: str
    train: Path
    test: Path
    items: Path | None


def _random_holdout(ratings: pl.DataFrame, share: float, seed: int) -> pl.Series:
    rng = np.random.default_rng(seed)
    draw = pl.Series("draw", rng.random(ratings.height))
    ranked = ratings.with_columns(draw).with_columns(
        rank=pl.col("draw").rank("ordinal").over("user_id"), n=pl.len().over("user_id")
    )
    # At least one row of each user stays in training.
    return (ranked["rank"] > (ranked["n"] * (1 - share)).ceil().clip(1)).alias("test")


def _uuid(kind: str, values: pl.Series) -> dict[object, str]:
    ns = uuid.uuid5(uuid.NAMESPACE_URL, f"hybridrec/{kind}")
    return {v: str(uuid.uuid5(ns, str(v))) for v in values.unique().to_list()}


def write_shape(
    name: str,
    ratings: pl.DataFrame,
    items: pl.DataFrame | None,
    out_dir: str | Path,
    *,
    test_share: float = 0.2,
    seed: int = 0,
) -> ShapeFiles:
    """Write shape ``name`` of ``ratings`` (``user_id,item_id,rating,timestamp``) to CSVs.

    Args:
        name: One of `SHAPES`.
        ratings: Explicit ratings with canonical names.
        items: The catalog (``item_id,title,categories``...), or None.
        out_dir: Folder for ``train.csv``, ``test.csv`` and ``items.csv``.
        test_share: Share of each user's rows held out (random shapes).
        seed: Seed of the random hold-out.

    Raises:
        ConfigError: An unknown shape name.
    """
    if name not in SHAPES:
        raise ConfigError(f"unknown data shape {name!r}; valid: {', '.join(SHAPES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = ratings.select("user_id", "item_id", "rating", "timestamp")
    catalog = items
    if name == "leave_last_one_out":
        latest = (
            df.with_row_index("_row")
            .sort(["user_id", "timestamp", "_row"])
            .with_columns(
                test=pl.col("_row").cum_count().over("user_id") == pl.len().over("user_id")
            )
        )
        df = latest.drop("_row")
    else:
        df = df.with_columns(_random_holdout(df, test_share, seed))
    if name == "no_ratings":
        df = df.drop("rating")
    if name == "string_ids":
        users, item_ids = _uuid("user", df["user_id"]), _uuid("item", df["item_id"])
        df = df.with_columns(
            pl.col("user_id").replace_strict(users, return_dtype=pl.String),
            pl.col("item_id").replace_strict(item_ids, return_dtype=pl.String),
        )
        if catalog is not None:
            catalog = catalog.filter(pl.col("item_id").is_in(list(item_ids))).with_columns(
                pl.col("item_id").replace_strict(item_ids, return_dtype=pl.String)
            )
    train, test = df.filter(~pl.col("test")).drop("test"), df.filter(pl.col("test")).drop("test")
    files = ShapeFiles(name, out / "train.csv", out / "test.csv", None)
    train.write_csv(files.train)
    test.write_csv(files.test)
    if catalog is not None:
        flat = catalog.with_columns(
            pl.col(c).list.join("|") for c in catalog.columns if catalog[c].dtype == pl.List
        )
        flat.write_csv(out / "items.csv")
        files = ShapeFiles(name, files.train, files.test, out / "items.csv")
    return files
