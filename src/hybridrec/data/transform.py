"""Turning raw interactions into training data: explicit→implicit, duplicates, k-core."""

from __future__ import annotations

from typing import Literal

import polars as pl

from hybridrec.errors import ConfigError, DataError

__all__ = ["deduplicate", "kcore_filter", "to_implicit"]

ImplicitMode = Literal["threshold", "confidence", "binary", "keep"]


def to_implicit(
    df: pl.DataFrame, *, mode: ImplicitMode = "threshold", min_rating: float | None = None
) -> pl.DataFrame:
    """Convert explicit ratings into implicit-feedback weights.

    Args:
        df: Canonical interactions whose ``weight`` holds ratings (or counts).
        mode: ``threshold`` keeps rows with ``weight >= min_rating`` as positives of weight 1;
            ``confidence`` keeps them (all rows when ``min_rating`` is None) with the rating
            as confidence; ``binary`` sets every weight to 1; ``keep`` changes nothing.
        min_rating: The positive threshold (required for ``threshold``).

    Raises:
        ConfigError: ``threshold`` without ``min_rating``, or an unknown mode.
        DataError: No rows are left.
    """
    if mode == "keep":
        return df
    if mode == "threshold" and min_rating is None:
        raise ConfigError("implicit mode 'threshold' needs min_rating (e.g. 4.0)")
    out = df
    if min_rating is not None and mode in ("threshold", "confidence"):
        out = out.filter(pl.col("weight") >= min_rating)
    if mode in ("threshold", "binary"):
        out = out.with_columns(pl.lit(1.0).alias("weight"))
    elif mode != "confidence":
        raise ConfigError(f"unknown implicit mode {mode!r}; valid: threshold, confidence, binary")
    if out.height == 0:
        raise DataError(f"no interactions left after implicit conversion (min_rating={min_rating})")
    return out


def deduplicate(
    df: pl.DataFrame, how: Literal["last", "sum", "max", "first"] = "last"
) -> pl.DataFrame:
    """Collapse repeated (user, item) rows into one.

    ``last``/``first`` keep the weight of the latest/earliest event (by timestamp, then by
    row order), ``sum``/``max`` aggregate weights; the timestamp kept is the latest.
    """
    if how not in ("last", "sum", "max", "first"):
        raise ConfigError(f"unknown dedup {how!r}; valid: last, first, sum, max")
    keys = ["user_id", "item_id"]
    ordered = df.with_row_index("_row").sort([*keys, "timestamp", "_row"], nulls_last=False)
    weight = {
        "last": pl.col("weight").last(),
        "first": pl.col("weight").first(),
        "sum": pl.col("weight").sum(),
        "max": pl.col("weight").max(),
    }[how]
    return (
        ordered.group_by(keys, maintain_order=True)
        .agg(weight, pl.col("timestamp").max(), pl.col("event_type").last())
        .select(df.columns)
    )


def kcore_filter(
    df: pl.DataFrame, *, min_user: int = 1, min_item: int = 1, max_rounds: int = 50
) -> pl.DataFrame:
    """Keep users with ≥ ``min_user`` and items with ≥ ``min_item`` interactions, repeatedly.

    Removing items can push users under their threshold and vice versa, so this iterates
    until nothing changes (the k-core).

    Raises:
        DataError: Nothing survives the filter.
    """
    out = df
    for _ in range(max_rounds):
        before = out.height
        if min_item > 1:
            out = out.filter(pl.len().over("item_id") >= min_item)
        if min_user > 1:
            out = out.filter(pl.len().over("user_id") >= min_user)
        if out.height == before:
            break
    if out.height == 0:
        raise DataError(
            f"no interactions left after k-core filtering (min_user={min_user}, "
            f"min_item={min_item})"
        )
    return out
