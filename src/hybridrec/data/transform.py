"""Turning raw interactions into training data: explicit→implicit, duplicates, k-core.

``implicit = "auto"`` (the default) learns the conversion from the data itself
(`resolve_conversion`):

- explicit ratings (a ``rating`` column): a threshold on the data's own scale, the top fifth
  of it: ``min_rating = 0.8 × top``, where ``top`` is the largest rating rounded up to 5, 10
  or 100 (≥ 4 of 5, ≥ 8 of 10, ≥ 80 of 100; any other scale: 0.8 × its largest rating). A
  user none of whose ratings reaches the threshold keeps the ratings at or above their own
  mean instead, so no rater vanishes from training (training data only: held-out files use
  the plain threshold, as an evaluation must);
- no rating or weight column (check-ins, clicks, purchases): binary, and repeated
  (user, item) events become counts used as confidence;
- a weight column that is not a rating (quantities, durations): the weights as confidence,
  rows with weight ≤ 0 dropped, repeated events summed.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import polars as pl

from hybridrec.errors import ConfigError, DataError

__all__ = [
    "Conversion",
    "apply_conversion",
    "deduplicate",
    "has_repeated_pairs",
    "kcore_filter",
    "resolve_conversion",
    "to_implicit",
]

ImplicitMode = Literal["threshold", "confidence", "binary", "keep"]
DedupMode = Literal["last", "first", "sum", "max"]
# Rating scales a largest rating is rounded up to, and the share of the scale that is positive.
_SCALES = (5.0, 10.0, 100.0)
_POSITIVE_SHARE = 0.8
# Dropping more users than this share is worth a warning: they get no personal answers.
WARN_DROPPED_USERS = 0.2


@dataclass(frozen=True)
class Conversion:
    """How raw interactions become implicit feedback, resolved for one dataset.

    Attributes:
        mode: The implicit mode applied.
        min_rating: The positive threshold (``threshold``), or a floor (``confidence``).
        dedup: How repeated (user, item) rows combine.
        rescue_by_user_mean: Users with no rating at the threshold keep those at or above
            their own mean (training data only).
        why: One line saying what was detected in the data.
    """

    mode: ImplicitMode
    min_rating: float | None
    dedup: DedupMode
    rescue_by_user_mean: bool = False
    why: str = ""

    def describe(self) -> str:
        """What the conversion does, in words."""
        if self.mode == "threshold":
            what = f"ratings >= {self.min_rating:g} are positives"
        elif self.mode == "confidence":
            floor = f" (>= {self.min_rating:g})" if self.min_rating is not None else ""
            what = f"weights{floor} kept as confidence"
        elif self.mode == "binary":
            what = "every interaction is a positive"
        else:
            what = "weights kept as they are"
        return f"{what}, repeated rows: {self.dedup}" + (f" ({self.why})" if self.why else "")


def _rating_threshold(top: float) -> float:
    scale = next((s for s in _SCALES if top <= s), top)
    return _POSITIVE_SHARE * scale


def resolve_conversion(
    df: pl.DataFrame,
    *,
    implicit: Literal["auto", "threshold", "confidence", "binary", "keep"],
    min_rating: float | None,
    dedup: Literal["auto", "last", "first", "sum", "max"],
) -> Conversion:
    """The conversion the data config asks for, with ``auto`` choices made from ``df``.

    Args:
        df: Canonical interactions (training data: the rule is learned here and then applied
            unchanged to validation and test files).
        implicit: The configured mode; ``auto`` decides from the data (module docstring).
        min_rating: A configured threshold (None: learned from the rating scale).
        dedup: The configured rule for repeated rows; ``auto``: ``last`` for ratings,
            ``sum`` (counts) for events.
    """
    explicit = (
        bool(df.select((pl.col("event_type") == "rating").all()).item()) if df.height else False
    )
    if implicit != "auto":
        chosen_dedup: DedupMode = ("last" if explicit else "sum") if dedup == "auto" else dedup
        return Conversion(implicit, min_rating, chosen_dedup)
    if explicit:
        top = float(df["weight"].max())  # type: ignore[arg-type]
        threshold = min_rating if min_rating is not None else _rating_threshold(top)
        return Conversion(
            "threshold",
            threshold,
            "last" if dedup == "auto" else dedup,
            rescue_by_user_mean=min_rating is None,
            why=f"explicit ratings up to {top:g}",
        )
    ones = bool(df.select((pl.col("weight") == 1.0).all()).item())
    chosen = "sum" if dedup == "auto" else dedup
    if ones and not has_repeated_pairs(df):
        return Conversion("binary", None, chosen, why="no rating or weight column")
    if ones:
        return Conversion("confidence", None, chosen, why="repeated events counted as confidence")
    return Conversion(
        "confidence",
        min_rating if min_rating is not None else math.nextafter(0.0, 1.0),
        chosen,
        why="weights used as confidence",
    )


def apply_conversion(
    df: pl.DataFrame, conversion: Conversion, *, training: bool = True
) -> pl.DataFrame:
    """Apply a resolved `Conversion`: implicit weights, then duplicates combined.

    Args:
        df: Canonical interactions.
        conversion: From `resolve_conversion`.
        training: Rescue users by their own mean when the conversion says so (held-out data
            is converted by the plain rule).

    Raises:
        DataError: No rows are left.
    """
    out = df
    if conversion.rescue_by_user_mean and training and conversion.min_rating is not None:
        best = pl.col("weight").max().over("user_id")
        mean = pl.col("weight").mean().over("user_id")
        keep = (pl.col("weight") >= conversion.min_rating) | (
            (best < conversion.min_rating) & (pl.col("weight") >= mean)
        )
        out = out.filter(keep).with_columns(pl.lit(1.0).alias("weight"))
        if out.height == 0:
            raise DataError("no interactions left after implicit conversion")
    else:
        out = to_implicit(out, mode=conversion.mode, min_rating=conversion.min_rating)
    return deduplicate(out, conversion.dedup)


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
        raise DataError(
            f"no interactions left after implicit conversion (implicit={mode!r}, "
            f'min_rating={min_rating}); set [data] implicit = "auto" or "binary", or '
            "lower min_rating"
        )
    return out


def deduplicate(
    df: pl.DataFrame, how: Literal["last", "sum", "max", "first"] = "last"
) -> pl.DataFrame:
    """Collapse repeated (user, item) rows into one.

    ``last``/``first`` keep the weight of the latest/earliest event (by timestamp, then by
    row order), ``sum``/``max`` aggregate weights; the timestamp kept is the latest. Rows
    come out sorted by (user, item).

    A log with no repeated pair (the common case, checked in one hashing pass) is only
    sorted: every rule keeps such a row as it is.
    """
    if how not in ("last", "sum", "max", "first"):
        raise ConfigError(f"unknown dedup {how!r}; valid: last, first, sum, max")
    keys = ["user_id", "item_id"]
    # A lone null weight sums to 0; every other single value aggregates to itself.
    if not (how == "sum" and df["weight"].null_count()) and not has_repeated_pairs(df):
        return _sorted_by_pair(df)
    lean = _dedup_by_key(df, how)
    if lean is not None:
        return lean
    ordered = df.with_row_index("_row").sort([*keys, "timestamp", "_row"], nulls_last=False)
    weight = _weight_of(how)
    return (
        ordered.group_by(keys, maintain_order=True)
        .agg(weight, pl.col("timestamp").max(), pl.col("event_type").last())
        .select(df.columns)
    )


def _weight_of(how: DedupMode) -> pl.Expr:
    """How a group of repeated (user, item) rows combines its weights (rows in time order)."""
    return {
        "last": pl.col("weight").last(),
        "first": pl.col("weight").first(),
        "sum": pl.col("weight").sum(),
        "max": pl.col("weight").max(),
    }[how]


def _pair_key(df: pl.DataFrame) -> tuple[pl.Expr, int, int, int] | None:
    """One int64 key in (user, item) order for integer ids, with (user min, item min, span).

    None when the ids are text or their ranges do not fit one int64.
    """
    users, items = df["user_id"], df["item_id"]
    if users.dtype != pl.Int64 or items.dtype != pl.Int64:
        return None
    u_min, i_min = int(users.min()), int(items.min())  # type: ignore[arg-type]
    span = int(items.max()) - i_min + 1  # type: ignore[arg-type]
    if (int(users.max()) - u_min + 1) * span >= 2**63:  # type: ignore[arg-type]
        return None
    return (pl.col("user_id") - u_min) * span + (pl.col("item_id") - i_min), u_min, i_min, span


#: Rows `_dedup_by_key` sorts at a time: the log is cut into ranges of users of about this
#: many rows, each sorted and grouped on its own, so the working memory is one range's.
DEDUP_PART_ROWS = 4_000_000


def _user_ranges(df: pl.DataFrame, parts: int) -> list[tuple[int | None, int | None]]:
    """``parts`` half-open user-id ranges of about equal rows (edges from a sample)."""
    if parts <= 1:
        return [(None, None)]
    sample = df["user_id"].sample(min(df.height, 200_000), seed=0)
    qs = [sample.quantile(i / parts, "lower") for i in range(1, parts)]
    edges = sorted({int(q) for q in qs if q is not None})
    bounds: list[int | None] = [None, *edges, None]
    return list(itertools.pairwise(bounds))


def _dedup_by_key(df: pl.DataFrame, how: DedupMode) -> pl.DataFrame | None:
    """`deduplicate` on one int64 pair key, for integer ids and one event type.

    The same result as the general path with a fraction of its memory (at 50M rows the
    general path's sort of every column with a row index dominates the whole preparation):
    only the key, the weight and the timestamp are carried, and the log is deduplicated one
    range of users at a time (`DEDUP_PART_ROWS`), as no (user, item) pair spans two ranges.
    None when it does not apply.
    """
    pair = _pair_key(df)
    if pair is None:
        return None
    key, u_min, i_min, span = pair
    event = pl.col("event_type")
    if df["event_type"].null_count() or not df.select((event == event.first()).all()).item():
        return None
    event_type = df["event_type"][0]
    weight = _weight_of(how)
    # Sorting then grouping in order takes about half the memory of a hash aggregation here.
    # The sort is stable (and a filter keeps row order), so equal timestamps keep the file's
    # row order, as the row index does in the general path.
    by = ["_key"] if how in ("sum", "max") else ["_key", "timestamp"]
    pieces = []
    for lo, hi in _user_ranges(df, -(-df.height // DEDUP_PART_ROWS)):
        frame = df.lazy()
        if lo is not None:
            frame = frame.filter(pl.col("user_id") >= lo)
        if hi is not None:
            frame = frame.filter(pl.col("user_id") < hi)
        piece = (
            frame.select(key.alias("_key"), "weight", "timestamp")
            .sort(by, nulls_last=False, maintain_order=True)
            .group_by("_key", maintain_order=True)
            .agg(weight, pl.col("timestamp").max())
            .select(
                (pl.col("_key") // span + u_min).alias("user_id"),
                (pl.col("_key") % span + i_min).alias("item_id"),
                "weight",
                "timestamp",
            )
            .collect()
        )
        pieces.append(piece)
    # Ranges come in user order, so the pieces stack in (user, item) order; kept as chunks
    # (no copy into one buffer).
    out = pl.concat(pieces, rechunk=False) if len(pieces) > 1 else pieces[0]
    # Added to the whole frame eagerly, the constant is held once, not once a row.
    return out.with_columns(pl.lit(event_type, dtype=pl.String).alias("event_type")).select(
        df.columns
    )


def has_repeated_pairs(df: pl.DataFrame) -> bool:
    """Whether any (user, item) pair occurs on more than one row.

    Rows in strict (user, item) order (what `deduplicate` returns) have none; otherwise one
    pass hashes the pairs: equal pairs hash alike, so distinct hashes settle it, and only
    rows whose hash repeats are compared exactly (a hash collision is not a repeat).
    """
    if df.height < 2 or _in_pair_order(df):
        return False
    pair = _pair_key(df)
    if pair is not None:
        # Integer ids: the pair key is exact, and distinct int64s are counted one range of
        # users at a time (a pair never spans two), so the hash table stays small.
        for lo, hi in _user_ranges(df, -(-df.height // DEDUP_PART_ROWS)):
            users = pl.col("user_id")
            mask = (users >= lo if lo is not None else pl.lit(True)) & (
                users < hi if hi is not None else pl.lit(True)
            )
            part = df.lazy().filter(mask).select(pair[0].n_unique(), pl.len()).collect()
            if part.item(0, 0) < part.item(0, 1):
                return True
        return False
    pairs = df.select("user_id", "item_id")
    hashes = pairs.hash_rows(seed=0)
    if hashes.n_unique() == df.height:
        return False
    return bool(pairs.filter(hashes.is_duplicated()).is_duplicated().any())


def _in_pair_order(df: pl.DataFrame) -> bool:
    """Whether every row's (user, item) is greater than the row before's (so none repeats)."""
    user, item = pl.col("user_id"), pl.col("item_id")
    before_user = user.shift(1)
    later = (user > before_user) | ((user == before_user) & (item > item.shift(1)))
    # A log in time order fails within its first rows: look there before scanning it all.
    return all(bool(part.select(later.slice(1).all()).item()) for part in (df.head(1024), df))


def _sorted_by_pair(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` ordered by (user, item), which must be distinct: unchanged when it already is."""
    if _in_pair_order(df):
        return df
    pair = _pair_key(df)
    if pair is not None:
        # One int64 key in (user, item) order: much cheaper to sort by than two columns.
        return df.sort(pair[0])
    return df.sort(["user_id", "item_id"])


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
