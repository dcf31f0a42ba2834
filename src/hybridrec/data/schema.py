"""Canonical tables: interactions, items and users, and their validation.

Every loader produces these tables (polars DataFrames), and everything downstream reads only
them. Validation turns malformed input into a `DataError` that names the source, the column,
the line and the value, before any model sees it.

Interactions: ``user_id``, ``item_id`` (Int64 or String), ``weight`` (Float64, finite),
``timestamp`` (Int64 seconds since the epoch, may be null), ``event_type`` (String).
Items: ``item_id`` plus optional ``title`` (String), ``categories`` (List[String]) and any
other text or numeric feature columns. Users: ``user_id`` plus attribute columns.
"""

from __future__ import annotations

import polars as pl

from hybridrec.errors import DataError

__all__ = [
    "ID_DTYPES",
    "INTERACTION_COLUMNS",
    "validate_interactions",
    "validate_items",
    "validate_users",
]

INTERACTION_COLUMNS = ("user_id", "item_id", "weight", "timestamp", "event_type")
ID_DTYPES = (pl.Int64, pl.String)
DEFAULT_EVENT_TYPE = "interaction"


def _fail(source: str, column: str, df: pl.DataFrame, mask: pl.Series, what: str) -> DataError:
    """Build the error for the first row where ``mask`` holds.

    The line is 1-based counting a header line, so it matches what an editor shows for a CSV
    (for Parquet or in-memory tables it is the row number plus one).
    """
    idx = int(mask.arg_true()[0])
    value = df[column][idx]
    return DataError(f"{source}: column '{column}', line {idx + 2}: {what} (value {value!r})")


def _require_columns(df: pl.DataFrame, required: tuple[str, ...], source: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            f"{source}: missing column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(c) for c in missing)} (found: {', '.join(df.columns) or 'none'})"
        )


def _normalize_id(df: pl.DataFrame, column: str, source: str) -> pl.DataFrame:
    """Cast an id column to Int64 when it holds integers, else to String; no nulls allowed."""
    col = df[column]
    if col.null_count():
        raise _fail(source, column, df, col.is_null(), "missing id")
    if col.dtype.is_integer():
        return df.with_columns(pl.col(column).cast(pl.Int64))
    if col.dtype.is_float():
        bad = ~col.is_finite() | (col != col.floor()) | (col.abs() >= 2.0**63)
        if bad.any():
            raise _fail(source, column, df, bad, "id is not an integer or a string")
        return df.with_columns(pl.col(column).cast(pl.Int64))
    if col.dtype == pl.String:
        stripped = col.str.strip_chars()
        if (stripped == "").any():
            raise _fail(source, column, df, stripped == "", "empty id")
        return df.with_columns(stripped.alias(column))
    raise DataError(f"{source}: column '{column}' has type {col.dtype}; ids must be ints or text")


#: The largest float32 (numpy.finfo(numpy.float32).max).
_FLOAT32_MAX = 3.4028234663852886e38


def _to_float(df: pl.DataFrame, column: str, source: str) -> pl.DataFrame:
    col = df[column]
    if col.dtype == pl.String:
        cast = col.str.strip_chars().cast(pl.Float64, strict=False)
        bad = cast.is_null() & col.is_not_null()
        if bad.any():
            raise _fail(source, column, df, bad, "not a number")
        col = cast
    elif col.dtype.is_numeric():
        col = col.cast(pl.Float64)
    else:
        raise DataError(f"{source}: column '{column}' has type {col.dtype}; expected numbers")
    if col.null_count():
        raise _fail(source, column, df, col.is_null(), "missing value")
    if not col.is_finite().all():
        raise _fail(source, column, df, ~col.is_finite(), "not a finite number")
    # The models hold weights as float32; a larger value would become infinity there.
    huge = col.abs() > _FLOAT32_MAX
    if huge.any():
        raise _fail(source, column, df, huge, f"too large (at most {_FLOAT32_MAX:.4g})")
    return df.with_columns(col.alias(column))


#: Timestamps (Unix seconds) from year 1 to year 9999: every date and time type holds them,
#: and anything outside is a unit mix-up or garbage, not a time.
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799


def _check_seconds(df: pl.DataFrame, seconds: pl.Series, source: str) -> None:
    as_float = seconds.cast(pl.Float64)
    bad = ((as_float < _MIN_SECONDS) | (as_float > _MAX_SECONDS)).fill_null(False)
    if bad.any():
        raise _fail(
            source, "timestamp", df, bad, "timestamp out of range (years 1 to 9999, in seconds)"
        )


def _to_timestamp(df: pl.DataFrame, source: str) -> pl.DataFrame:
    """Accept integer seconds, numeric strings, or ISO datetimes; store Int64 seconds."""
    col = df["timestamp"]
    if col.dtype.is_integer():
        _check_seconds(df, col, source)
        out = col.cast(pl.Int64)
    elif col.dtype.is_float():
        # pandas writes missing times as NaN: treat them as missing, but infinity is an error.
        col = col.fill_nan(None)
        if col.is_infinite().any():
            raise _fail(source, "timestamp", df, col.is_infinite().fill_null(False), "infinite")
        _check_seconds(df, col, source)
        out = col.floor().cast(pl.Int64)
    elif isinstance(col.dtype, pl.Datetime | pl.Date):
        out = col.cast(pl.Datetime("ms")).dt.epoch("s")
    elif col.dtype == pl.String:
        s = col.str.strip_chars()
        numbers = s.cast(pl.Float64, strict=False)
        _check_seconds(df, numbers, source)
        out = numbers.floor().cast(pl.Int64, strict=False)
        text = out.is_null() & s.is_not_null() & (s != "")
        if text.any():
            # Parse as dates only the values that are not numbers; polars guesses the format
            # from them, and raises when it cannot, which we turn into a line-level error.
            try:
                as_dt = s.str.to_datetime(strict=False, time_unit="ms").dt.epoch("s")
            except pl.exceptions.PolarsError:
                as_dt = pl.Series("timestamp", [None] * len(s), dtype=pl.Int64)
            out = out.fill_null(as_dt)
        bad = out.is_null() & s.is_not_null() & (s != "")
        if bad.any():
            raise _fail(source, "timestamp", df, bad, "not a timestamp (seconds or ISO date)")
    elif col.dtype == pl.Null:
        out = pl.Series("timestamp", [None] * len(col), dtype=pl.Int64)
    else:
        raise DataError(f"{source}: column 'timestamp' has type {col.dtype}; expected a time")
    return df.with_columns(out.alias("timestamp"))


def validate_interactions(df: pl.DataFrame, source: str = "interactions") -> pl.DataFrame:
    """Check and normalize an interactions table to the canonical schema.

    Args:
        df: A table with at least ``user_id`` and ``item_id``; ``weight`` (or ``rating``),
            ``timestamp`` and ``event_type`` are optional.
        source: Where the table came from, for error messages (usually a file path).

    Returns:
        The table with exactly the canonical columns and dtypes. A missing ``weight`` becomes
        1.0 (or the ``rating`` when present), a missing ``timestamp`` null, a missing
        ``event_type`` ``"interaction"`` (``"rating"`` when ratings were given).

    Raises:
        DataError: The table is empty, a column is missing, or a value has the wrong type.
    """
    if df.height == 0:
        raise DataError(f"{source}: no rows (an empty file or table)")
    _require_columns(df, ("user_id", "item_id"), source)
    df = _normalize_id(df, "user_id", source)
    df = _normalize_id(df, "item_id", source)
    event_type = DEFAULT_EVENT_TYPE
    # Columns the file lacks are constants: polars holds them as one value, not one a row.
    if "weight" in df.columns:
        df = _to_float(df, "weight", source)
    elif "rating" in df.columns:
        # Check under the file's own column name, so errors name what the user wrote.
        df = _to_float(df, "rating", source)
        df = df.with_columns(pl.col("rating").alias("weight"))
        event_type = "rating"
    else:
        df = df.with_columns(pl.lit(1.0).alias("weight"))
    if "timestamp" in df.columns:
        df = _to_timestamp(df, source)
    else:
        df = df.with_columns(pl.lit(None, dtype=pl.Int64).alias("timestamp"))
    if "event_type" in df.columns:
        df = df.with_columns(pl.col("event_type").cast(pl.String).fill_null(event_type))
    else:
        df = df.with_columns(pl.lit(event_type).alias("event_type"))
    return df.select(INTERACTION_COLUMNS)


def validate_items(df: pl.DataFrame, source: str = "items") -> pl.DataFrame:
    """Check an item catalog: a unique, non-null ``item_id``; ``title`` text when present.

    ``categories`` may be a list of strings or a ``|``-separated string (split here).

    Raises:
        DataError: The table is empty, ``item_id`` is missing or duplicated.
    """
    if df.height == 0:
        raise DataError(f"{source}: no rows (an empty file or table)")
    _require_columns(df, ("item_id",), source)
    df = _normalize_id(df, "item_id", source)
    dup = ~df["item_id"].is_first_distinct()
    if dup.any():
        raise _fail(source, "item_id", df, dup, "duplicate item id")
    if "title" in df.columns:
        df = df.with_columns(pl.col("title").cast(pl.String))
    if "categories" in df.columns and df["categories"].dtype == pl.String:
        df = df.with_columns(
            pl.col("categories")
            .fill_null("")
            .str.split("|")
            .list.eval(pl.element().filter(pl.element() != ""))
        )
    return df


def validate_users(df: pl.DataFrame, source: str = "users") -> pl.DataFrame:
    """Check a user table: a unique, non-null ``user_id``; other columns are attributes.

    Raises:
        DataError: The table is empty, ``user_id`` is missing or duplicated.
    """
    if df.height == 0:
        raise DataError(f"{source}: no rows (an empty file or table)")
    _require_columns(df, ("user_id",), source)
    df = _normalize_id(df, "user_id", source)
    dup = ~df["user_id"].is_first_distinct()
    if dup.any():
        raise _fail(source, "user_id", df, dup, "duplicate user id")
    return df
