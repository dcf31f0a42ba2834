"""Train/valid/test splits: per-user random, per-user temporal, global temporal, from files.

Every split returns a `Split` of canonical interaction tables. Per-user splits hold out a
share of each user's interactions, so every evaluated user has training history; the global
temporal split is the production-like one, where test users may be new.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from hybridrec.errors import ConfigError, DataError

__all__ = [
    "Split",
    "carve_validation",
    "global_temporal_split",
    "random_split",
    "temporal_split",
]


@dataclass(frozen=True)
class Split:
    """A train table and the held-out tables (``valid`` may be None)."""

    train: pl.DataFrame
    test: pl.DataFrame
    valid: pl.DataFrame | None = None

    def train_valid(self) -> pl.DataFrame:
        """Train and valid together: the data a tuned model is refit on before testing."""
        return self.train if self.valid is None else pl.concat([self.train, self.valid])


def _check_ratios(valid: float, test: float) -> None:
    if not (0 <= valid < 1 and 0 < test < 1 and valid + test < 1):
        raise ConfigError(
            f"split ratios must satisfy 0 <= valid, 0 < test and valid + test < 1 "
            f"(got valid={valid}, test={test})"
        )


def _assign(
    users: np.ndarray, rank: np.ndarray, n_test: np.ndarray, n_valid: np.ndarray
) -> np.ndarray:
    """Part per row: 2 = test, 1 = valid, 0 = train, from each row's rank within its user.

    ``rank`` 0 is the row held out first (the latest, or the first of a random order).
    """
    nt, nv = n_test[users], n_valid[users]
    return np.where(rank < nt, 2, np.where(rank < nt + nv, 1, 0))


def _split_by_part(df: pl.DataFrame, part: np.ndarray, with_valid: bool) -> Split:
    tagged = df.with_columns(pl.Series("_part", part))
    train = tagged.filter(pl.col("_part") == 0).drop("_part")
    test = tagged.filter(pl.col("_part") == 2).drop("_part")
    valid = tagged.filter(pl.col("_part") == 1).drop("_part") if with_valid else None
    if train.height == 0 or test.height == 0:
        raise DataError(
            f"split left {train.height} training and {test.height} test rows; "
            "the data is too small for these ratios"
        )
    return Split(train=train, test=test, valid=valid)


def _holdout_counts(counts: np.ndarray, valid: float, test: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows to hold out per user, rounded, always leaving at least one training row."""
    n_test = np.rint(counts * test).astype(np.int64)
    n_valid = np.rint(counts * valid).astype(np.int64)
    # A user with one interaction keeps it for training.
    n_test = np.minimum(n_test, np.maximum(counts - 1, 0))
    n_valid = np.minimum(n_valid, np.maximum(counts - 1 - n_test, 0))
    return n_test, n_valid


def _user_codes(df: pl.DataFrame) -> tuple[np.ndarray, int]:
    codes = df["user_id"].rank("dense").to_numpy().astype(np.int64) - 1
    return codes, int(codes.max()) + 1


def random_split(
    df: pl.DataFrame, *, valid: float = 0.1, test: float = 0.1, seed: int = 42
) -> Split:
    """Per-user random split: each user's interactions are shuffled and a share held out.

    Args:
        df: Canonical interactions.
        valid: Share of each user's rows for validation (0 for none).
        test: Share of each user's rows for test.
        seed: Random seed; the same seed gives the same split.
    """
    _check_ratios(valid, test)
    users, n_users = _user_codes(df)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(users.size), users))
    counts = np.bincount(users, minlength=n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(users.size, dtype=np.int64)
    rank[order] = np.arange(users.size) - starts[users[order]]
    n_test, n_valid = _holdout_counts(counts, valid, test)
    return _split_by_part(df, _assign(users, rank, n_test, n_valid), valid > 0)


def temporal_split(
    df: pl.DataFrame,
    *,
    test: float | None = 0.2,
    valid: float = 0.0,
    leave_last_n: int | None = None,
) -> Split:
    """Per-user temporal split: each user's latest interactions are held out.

    Args:
        df: Canonical interactions with timestamps.
        test: Share of each user's latest rows for test (ignored with ``leave_last_n``).
        valid: Share of each user's rows, just before the test rows, for validation.
        leave_last_n: Hold out exactly each user's last n rows for test (and n for valid when
            ``valid`` > 0), leaving at least one training row.

    Raises:
        DataError: The table has no timestamps.
    """
    if df["timestamp"].null_count() == df.height:
        raise DataError("temporal split needs timestamps; the interactions have none")
    users, n_users = _user_codes(df)
    ts = df["timestamp"].fill_null(np.iinfo(np.int64).min).to_numpy()
    # Latest first within each user; ties broken by row order (later rows are later events).
    order = np.lexsort((-np.arange(users.size), -ts, users))
    counts = np.bincount(users, minlength=n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(users.size, dtype=np.int64)
    rank[order] = np.arange(users.size) - starts[users[order]]
    if leave_last_n is not None:
        if leave_last_n < 1:
            raise ConfigError(f"leave_last_n must be >= 1 (got {leave_last_n})")
        n_test = np.minimum(leave_last_n, np.maximum(counts - 1, 0))
        n_valid = (
            np.minimum(leave_last_n, np.maximum(counts - 1 - n_test, 0))
            if valid > 0
            else np.zeros_like(counts)
        )
    else:
        if test is None:
            raise ConfigError("temporal split needs test or leave_last_n")
        _check_ratios(valid, test)
        n_test, n_valid = _holdout_counts(counts, valid, test)
    return _split_by_part(df, _assign(users, rank, n_test, n_valid), valid > 0)


def global_temporal_split(
    df: pl.DataFrame,
    *,
    cutoff: int | None = None,
    test: float = 0.2,
    valid: float = 0.0,
) -> Split:
    """Global temporal split: everything after a point in time is held out.

    Args:
        df: Canonical interactions with timestamps.
        cutoff: Timestamp (seconds) where test starts; by default the quantile that leaves
            ``test`` of the rows after it.
        test: Share of rows for test when no cutoff is given.
        valid: Share of rows, just before the test cutoff, for validation.
    """
    if df["timestamp"].null_count():
        raise DataError("global temporal split needs a timestamp on every interaction")
    ts = df["timestamp"].to_numpy()
    if cutoff is None:
        _check_ratios(valid, test)
        # Round up: a cutoff between two timestamps must not pull the earlier one into test.
        cutoff = int(np.ceil(np.quantile(ts, 1 - test)))
    before = ts[ts < cutoff]
    if valid and before.size == 0:
        raise DataError(f"no interactions before the cutoff {cutoff} to carve validation from")
    valid_start = int(np.ceil(np.quantile(before, 1 - valid / (1 - test)))) if valid else cutoff
    part = np.where(ts >= cutoff, 2, np.where(ts >= valid_start, 1, 0))
    return _split_by_part(df, part, valid > 0)


#: Share of each user's rows carved out for validation when the split config holds out none.
CARVE_SHARE = 0.1


def carve_validation(
    df: pl.DataFrame, *, method: str = "random", share: float = 0.0, seed: int = 42
) -> Split:
    """Carve a validation split out of training data, per user, for tuning.

    The rule: when every row has a timestamp and the split ``method`` is temporal
    (``temporal`` or ``global_temporal``, i.e. the test protocol holds out the latest
    interactions), each user's latest interaction is held out (leave-last-one-out), as the
    test would be. Otherwise a random per-user ``share`` (`CARVE_SHARE` when 0) is held
    out, seeded. Either way a user with a single interaction keeps it for training.

    Returns:
        A `Split` whose ``valid`` and ``test`` are both the carved rows.
    """
    timed = df.height > 0 and df["timestamp"].null_count() == 0
    if timed and method in ("temporal", "global_temporal"):
        carved = temporal_split(df, test=None, leave_last_n=1)
    else:
        carved = random_split(df, valid=0.0, test=share or CARVE_SHARE, seed=seed)
    return Split(train=carved.train, test=carved.test, valid=carved.test)
