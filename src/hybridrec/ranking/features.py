"""Features of (user, candidate item) pairs for the ranker, and the leakage check.

`FeatureTables.build` aggregates an interaction log once (polars group-bys over the whole
log, no per-row Python): item popularity overall and in recent windows, trend, age, the
catalog's category and numeric columns; each user's activity, recency, span, active days and
time-of-day/week habits; and a sorted (item, time) key array from which the popularity of an
item *at the time of a user's last interaction* is two binary searches. `pair_features` then
turns candidates into a float32 matrix with array operations only: gathered item and user
columns, user features recomputed from the history rows it is given (so a user folded in
with new history gets them too), and user × item columns (category affinity, popularity and
age at the user's time, gaps to the user's taste).

Time windows are read relative to the newest event of the log (``ref_time``) or to a user's
own last event; a log without timestamps gets the time-free features only (their time
columns are NaN, which LightGBM treats as missing).

`check_no_leakage` is the guard the ranker's training runs before it fits: every event the
features read for a user must precede that user's label window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from numpy.typing import NDArray

from hybridrec.data.vocab import Vocab
from hybridrec.errors import DataError
from hybridrec.models.candidates import csr_lookup

__all__ = [
    "DAY",
    "FeatureTables",
    "LeakageError",
    "check_no_leakage",
    "indexed_events",
    "pair_features",
]

#: Seconds per day.
DAY = 86_400.0
# Seconds of time offsets in the (item, time) keys: 2**34 s is over 500 years.
_TIME_BITS = 34
# Numeric catalog columns used as item features when present.
NUMERIC_COLUMNS = ("year", "price")


class LeakageError(DataError):
    """Features read events from the label window (data after the cutoff)."""


def indexed_events(frame: pl.DataFrame, users: Vocab, items: Vocab) -> pl.DataFrame:
    """``u`` (user index), ``i`` (item index), ``t`` (seconds or null), ``w`` of known pairs."""
    u = users.index(frame["user_id"].to_numpy(), missing="mask")
    i = items.index(frame["item_id"].to_numpy(), missing="mask")
    has_time = "timestamp" in frame.columns
    out = pl.DataFrame(
        {
            "u": u,
            "i": i,
            "t": frame["timestamp"].cast(pl.Float64)
            if has_time
            else pl.repeat(None, frame.height, dtype=pl.Float64, eager=True),
            "w": frame["weight"].cast(pl.Float32) if "weight" in frame.columns else 1.0,
        }
    )
    return out.filter((pl.col("u") >= 0) & (pl.col("i") >= 0))


@dataclass
class FeatureTables:
    """Per-item and per-user aggregates of a log, the inputs of `pair_features`.

    Attributes:
        n_users: Users of the vocabulary the indices refer to.
        n_items: Items of that vocabulary.
        windows: Recent windows, in days.
        ref_time: The newest event's time (NaN without timestamps).
        item: Item column name → (n_items,) float32.
        item_category: Primary category code per item (-1: none), a categorical feature.
        item_cats: (n_items × categories) binary CSR of every category of an item.
        user: Time-based user column name → (n_users,) float32 (NaN for a user without).
        user_time: Each user's last event time (NaN: none).
        read_until: The latest event time read per user (the leakage check's evidence).
        event_keys: Sorted ``item << 34 | (time - t0)`` of every timed event, or None.
        t0: The time origin of ``event_keys``.
        numeric: The catalog's numeric columns found (``year``, ``price``).
    """

    n_users: int
    n_items: int
    windows: tuple[float, ...]
    ref_time: float
    item: dict[str, NDArray[np.float32]]
    item_category: NDArray[np.int32]
    item_cats: sp.csr_matrix
    user: dict[str, NDArray[np.float32]]
    user_time: NDArray[np.float64]
    read_until: NDArray[np.float64]
    event_keys: NDArray[np.int64] | None
    t0: float
    numeric: tuple[str, ...] = field(default_factory=tuple)

    @property
    def timed(self) -> bool:
        """Whether the log had timestamps."""
        return self.event_keys is not None

    @classmethod
    def build(
        cls,
        log: pl.DataFrame,
        users: Vocab,
        items: Vocab,
        *,
        items_table: pl.DataFrame | None = None,
        windows: Sequence[float] = (7.0, 30.0, 365.0),
    ) -> FeatureTables:
        """Aggregate ``log`` (canonical interactions) over the user and item vocabularies."""
        ev = indexed_events(log, users, items)
        n_users, n_items = len(users), len(items)
        windows = tuple(float(w) for w in windows)
        timed = ev.height > 0 and ev["t"].null_count() < ev.height
        ev = ev.with_columns(pl.col("t").fill_null(strategy="max") if timed else pl.col("t"))
        ref = float(ev["t"].max()) if timed else math.nan  # type: ignore[arg-type]
        item_agg = (
            ev.lazy()
            .group_by("i")
            .agg(
                pl.col("u").n_unique().alias("pop"),
                pl.len().alias("events"),
                *(
                    [
                        pl.col("t").min().alias("first"),
                        pl.col("t").max().alias("last"),
                        *((pl.col("t") >= ref - w * DAY).sum().alias(f"w{w:g}") for w in windows),
                    ]
                    if timed
                    else []
                ),
            )
        )
        agg = item_agg.collect()
        idx = agg["i"].to_numpy()

        def scatter(values: Any, fill: float = 0.0, dtype: Any = np.float32) -> NDArray[Any]:
            out = np.full(n_items, fill, dtype)
            out[idx] = np.asarray(values, np.float64)
            return out

        item: dict[str, NDArray[np.float32]] = {
            "item_pop": np.log1p(scatter(agg["pop"])),
            "item_events": np.log1p(scatter(agg["events"])),
        }
        nan = math.nan
        if timed:
            for w in windows:
                item[f"item_pop_{w:g}d"] = np.log1p(scatter(agg[f"w{w:g}"]))
            # Seconds since 1970 need float64 (float32 rounds them to minutes).
            first = scatter(agg["first"], nan, np.float64)
            last = scatter(agg["last"], nan, np.float64)
            item["item_age_days"] = ((ref - first) / DAY).astype(np.float32)
            item["item_idle_days"] = ((ref - last) / DAY).astype(np.float32)
            short, long = min(windows), max(windows)
            item["item_trend"] = (
                item[f"item_pop_{short:g}d"] - item[f"item_pop_{long:g}d"] + math.log(long / short)
            ).astype(np.float32)
        category, cats, numeric = _catalog(items_table, items)
        for col, values in numeric.items():
            item[f"item_{col}"] = values
        item["item_n_categories"] = np.diff(cats.indptr).astype(np.float32)

        user: dict[str, NDArray[np.float32]] = {}
        user_time = np.full(n_users, nan)
        read_until = np.full(n_users, nan)
        keys = None
        t0 = 0.0
        if timed:
            day = (pl.col("t") / DAY).floor()
            u_agg = (
                ev.lazy()
                .group_by("u")
                .agg(
                    pl.col("t").min().alias("first"),
                    pl.col("t").max().alias("last"),
                    day.n_unique().alias("days"),
                    pl.len().alias("events"),
                    # 1970-01-01 was a Thursday: days 2 and 3 of each week are Sat and Sun.
                    (((day % 7) >= 2) & ((day % 7) <= 3)).mean().alias("weekend"),
                    ((pl.col("t") % DAY) / 3600.0).mean().alias("hour"),
                )
                .collect()
            )
            uidx = u_agg["u"].to_numpy()

            def uscatter(values: Any) -> NDArray[np.float32]:
                out = np.full(n_users, nan, np.float32)
                out[uidx] = np.asarray(values, np.float64)
                return out

            first_u, last_u = u_agg["first"].to_numpy(), u_agg["last"].to_numpy()
            user_time[uidx] = last_u
            read_until[uidx] = last_u
            user["user_recency_days"] = uscatter((ref - last_u) / DAY)
            user["user_span_days"] = uscatter((last_u - first_u) / DAY)
            user["user_active_days"] = uscatter(np.log1p(u_agg["days"].to_numpy()))
            user["user_events_per_day"] = uscatter(
                u_agg["events"].to_numpy() / np.maximum(u_agg["days"].to_numpy(), 1)
            )
            user["user_weekend_share"] = uscatter(u_agg["weekend"])
            user["user_hour_mean"] = uscatter(u_agg["hour"])
            t0 = float(ev["t"].min())  # type: ignore[arg-type]
            keys = np.sort(
                (ev["i"].to_numpy().astype(np.int64) << _TIME_BITS)
                + (ev["t"].to_numpy() - t0).astype(np.int64)
            )
        return cls(
            n_users=n_users,
            n_items=n_items,
            windows=windows,
            ref_time=ref,
            item=item,
            item_category=category,
            item_cats=cats,
            user=user,
            user_time=user_time,
            read_until=read_until,
            event_keys=keys,
            t0=t0,
            numeric=tuple(numeric),
        )

    def names(self, retrievers: Sequence[str]) -> list[str]:
        """Column names of `pair_features`, in order."""
        cols = [f"{r}_{part}" for r in retrievers for part in ("score", "rank", "z")]
        cols += ["n_sources", *self.item, "item_category", *self.user]
        cols += ["user_items", "user_weight", "user_mean_pop"]
        cols += [f"user_mean_{c}" for c in self.numeric]
        cols += ["ui_cat_affinity", "ui_cat_max", "ui_pop_gap", "ui_seen_weight"]
        cols += [f"ui_{c}_gap" for c in self.numeric]
        if self.timed:
            cols += [f"ui_pop_{w:g}d_at_user" for w in self.windows]
            cols += ["ui_item_age_at_user"]
        return cols

    def nbytes(self) -> int:
        """Memory held by the tables."""
        arrays: list[NDArray[Any]] = [
            *self.item.values(),
            *self.user.values(),
            self.user_time,
            self.read_until,
        ]
        total = int(sum(a.nbytes for a in arrays)) + int(self.item_category.nbytes)
        total += int(self.item_cats.data.nbytes) + int(self.item_cats.indices.nbytes)
        return total + (int(self.event_keys.nbytes) if self.event_keys is not None else 0)


def _catalog(
    items_table: pl.DataFrame | None, items: Vocab
) -> tuple[NDArray[np.int32], sp.csr_matrix, dict[str, NDArray[np.float32]]]:
    """Primary category codes, item × category matrix, numeric columns (``items`` order)."""
    n = len(items)
    empty = sp.csr_matrix((n, 0), dtype=np.float32)
    if items_table is None or "item_id" not in items_table.columns:
        return np.full(n, -1, np.int32), empty, {}
    pos = items.index(items_table["item_id"].to_numpy(), missing="mask")
    keep = pos >= 0
    table = items_table.filter(pl.Series(keep))
    pos = pos[keep]
    numeric: dict[str, NDArray[np.float32]] = {}
    for col in NUMERIC_COLUMNS:
        if col in table.columns and table[col].dtype.is_numeric():
            values = np.full(n, np.nan, np.float32)
            values[pos] = table[col].cast(pl.Float64).fill_null(np.nan).to_numpy()
            numeric[col] = values
    category = np.full(n, -1, np.int32)
    if "categories" not in table.columns or table["categories"].dtype != pl.List(pl.String):
        return category, empty, numeric
    long = (
        table.select(pl.Series("pos", pos), pl.col("categories"))
        .explode("categories")
        .drop_nulls("categories")
    )
    # Codes by first appearance; stable per catalog (the ranker stores its own tables).
    names = long["categories"].unique(maintain_order=True)
    code = long["categories"].replace_strict(names, pl.int_range(names.len(), eager=True))
    rows, cols = long["pos"].to_numpy(), code.to_numpy().astype(np.int64)
    cats = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n, names.len()))
    cats.data[:] = 1.0
    first = long.with_columns(pl.Series("code", cols)).group_by("pos", maintain_order=True).first()
    category[first["pos"].to_numpy()] = first["code"].to_numpy()
    return category, cats, numeric


def pair_features(
    tables: FeatureTables,
    users: NDArray[np.int64],
    history: sp.csr_matrix,
    candidates: NDArray[np.int64],
    retriever: Mapping[str, tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]],
) -> NDArray[np.float32]:
    """The feature matrix of every (user row, candidate) cell, ``names`` order.

    Args:
        tables: Aggregates of the log the features may read.
        users: User indices (-1: a user the tables do not know).
        history: The users' history rows (training plus new), in the tables' item columns.
        candidates: (n, C) item indices, -1 for none (their rows are computed but unused).
        retriever: Per retriever, (score, rank, z-score) arrays shaped like ``candidates``.

    Returns:
        (n * C, features) float32, row-major over (user row, candidate).
    """
    n, c = candidates.shape
    cand = np.maximum(candidates, 0)
    cols: list[NDArray[Any]] = []
    in_top = np.zeros((n, c), np.float32)
    for score, rank, z in retriever.values():
        cols += [score, rank, z]
        in_top += np.isfinite(rank)
    cols.append(in_top)
    cols += [values[cand] for values in tables.item.values()]
    category = tables.item_category[cand]
    cols.append(np.where(category >= 0, category, np.nan).astype(np.float32))
    known = users >= 0
    safe = np.where(known, users, 0)
    for values in tables.user.values():
        col = np.where(known, values[safe], np.nan).astype(np.float32)
        cols.append(np.broadcast_to(col[:, None], (n, c)))

    # From the history rows: what the user has, so new history counts at once.
    binary = history.copy()
    binary.data = np.ones_like(binary.data)
    lengths = np.diff(binary.indptr).astype(np.float32)
    denom = np.maximum(lengths, 1.0)
    user_cols = [np.log1p(lengths), np.asarray(history.sum(axis=1)).ravel().astype(np.float32)]
    mean_pop = (binary @ tables.item["item_pop"].astype(np.float64)) / denom
    user_cols.append(np.where(lengths > 0, mean_pop, np.nan).astype(np.float32))
    means = {}
    for numeric in tables.numeric:
        values = tables.item[f"item_{numeric}"].astype(np.float64)
        ok = np.isfinite(values)
        total = binary @ np.where(ok, values, 0.0)
        count = binary @ ok.astype(np.float64)
        means[numeric] = np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(
            np.float32
        )
        user_cols.append(means[numeric])
    cols += [np.broadcast_to(v[:, None], (n, c)) for v in user_cols]

    affinity, best = _category_affinity(tables.item_cats, binary, lengths, cand)
    cols += [affinity, best]
    cols.append(tables.item["item_pop"][cand] - np.broadcast_to(user_cols[2][:, None], (n, c)))
    hist = history.tocsr()
    hist.sort_indices()
    cols.append(csr_lookup(hist, candidates)[0])
    for numeric in tables.numeric:
        cols.append(tables.item[f"item_{numeric}"][cand] - means[numeric][:, None])
    if tables.event_keys is not None:
        t_u = np.where(known, tables.user_time[safe], np.nan)
        t_u = np.where(np.isfinite(t_u), t_u, tables.ref_time)
        for w in tables.windows:
            cols.append(_count_between(tables, cand, t_u - w * DAY, t_u))
        first = tables.ref_time - tables.item["item_age_days"].astype(np.float64) * DAY
        cols.append(((t_u[:, None] - first[cand]) / DAY).astype(np.float32))
    out = np.empty((n * c, len(cols)), np.float32)
    for j, col in enumerate(cols):
        out[:, j] = np.asarray(col, np.float32).reshape(-1)
    return out


def _category_affinity(
    item_cats: sp.csr_matrix, binary: sp.csr_matrix, lengths: NDArray[np.float32], cand: Any
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Per cell: the mean and the max share of the user's history in the item's categories."""
    n, c = cand.shape
    if item_cats.shape[1] == 0:
        nan = np.full((n, c), np.nan, np.float32)
        return nan, nan
    shares = (binary @ item_cats).tocsr()  # users × categories: counts
    shares = sp.diags(1.0 / np.maximum(lengths, 1.0)) @ shares
    dense = shares.toarray().astype(np.float32) if n * shares.shape[1] <= 50_000_000 else None
    flat = cand.reshape(-1)
    starts = item_cats.indptr[flat]
    counts = item_cats.indptr[flat + 1] - starts
    total = int(counts.sum())
    offsets = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(total)
    cat = item_cats.indices[offsets]
    row = np.repeat(np.repeat(np.arange(n), c), counts)
    if dense is not None:
        vals = dense[row, cat]
    else:
        vals = np.asarray(shares[row, cat]).ravel().astype(np.float32)
    cell = np.repeat(np.arange(n * c), counts)
    sums = np.bincount(cell, weights=vals, minlength=n * c)
    best = np.zeros(n * c)
    np.maximum.at(best, cell, vals)
    mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    best = np.where(counts > 0, best, np.nan)
    return mean.reshape(n, c).astype(np.float32), best.reshape(n, c).astype(np.float32)


def _count_between(
    tables: FeatureTables, cand: NDArray[np.int64], lo: NDArray[np.float64], hi: NDArray[np.float64]
) -> NDArray[np.float32]:
    """log1p of each candidate's events with time in [lo, hi] of its row (binary searches)."""
    keys = tables.event_keys
    assert keys is not None
    base = cand.astype(np.int64) << _TIME_BITS
    span = float(1 << _TIME_BITS) - 1
    lo_off = np.clip(lo - tables.t0, 0, span).astype(np.int64)[:, None]
    hi_off = np.clip(hi - tables.t0, -1, span)
    hi_i = np.where(hi_off < 0, -1, hi_off).astype(np.int64)[:, None]
    count = np.searchsorted(keys, base + hi_i, side="right") - np.searchsorted(
        keys, base + lo_off, side="left"
    )
    out: NDArray[np.float32] = np.log1p(np.maximum(count, 0)).astype(np.float32)
    return out


def check_no_leakage(features: pl.DataFrame, labels: pl.DataFrame, *, by_time: bool = True) -> None:
    """Refuse a feature window that holds data from the label window.

    ``features`` are the events the features are built from, ``labels`` the label window
    (canonical interactions). With timestamps and ``by_time`` (labels are each user's
    latest events) the cutoff of a user is the time of the first event of its label
    window: every feature event of that user must be at or before it, and no label event
    may be among the feature events. Otherwise (no timestamps, or labels drawn at random),
    no label (user, item) pair may be among the feature events.

    Raises:
        LeakageError: Naming how many users or events are affected and one of them.
    """
    if labels.height == 0:
        return
    timed = (
        by_time
        and "timestamp" in features.columns
        and "timestamp" in labels.columns
        and labels["timestamp"].null_count() == 0
        and features["timestamp"].null_count() == 0
    )
    if timed:
        cut = labels.group_by("user_id").agg(pl.col("timestamp").min().alias("cut"))
        late = (
            features.join(cut, on="user_id", how="inner")
            .filter(pl.col("timestamp") > pl.col("cut"))
            .group_by("user_id")
            .agg(pl.col("timestamp").max().alias("read"), pl.col("cut").first())
            .sort("user_id")
        )
        if late.height:
            first = late.row(0, named=True)
            raise LeakageError(
                f"features read events after the label cutoff for {late.height} of "
                f"{cut.height} users (user {first['user_id']!r}: read until {first['read']}, "
                f"labels from {first['cut']}); the feature window must end before the label "
                "window"
            )
    keys = ["user_id", "item_id", *(["timestamp"] if timed else [])]
    shared = labels.select(keys).join(features.select(keys), on=keys, how="semi")
    if shared.height:
        first = shared.row(0, named=True)
        raise LeakageError(
            f"{shared.height} of {labels.height} label events are in the feature window "
            f"(user {first['user_id']!r}, item {first['item_id']!r})"
        )
