"""Tests for hybridrec.data.split: per-user random and temporal splits, global temporal split."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from hybridrec.data.split import Split, global_temporal_split, random_split, temporal_split
from hybridrec.errors import ConfigError, DataError

KEY = ["user_id", "item_id", "timestamp"]


@pytest.fixture
def data() -> pl.DataFrame:
    """40 users with 1..40 interactions each, distinct rows, shuffled row order."""
    rng = np.random.default_rng(7)
    users, items, ts = [], [], []
    for u in range(40):
        n = u + 1
        users += [f"u{u:02d}"] * n
        items += rng.choice(500, size=n, replace=False).tolist()
        ts += (1_000_000 + rng.choice(10_000, size=n, replace=False)).tolist()
    df = pl.DataFrame(
        {
            "user_id": users,
            "item_id": pl.Series(items, dtype=pl.Int64),
            "weight": np.ones(len(users)),
            "timestamp": pl.Series(ts, dtype=pl.Int64),
            "event_type": ["interaction"] * len(users),
        }
    )
    return df.sample(fraction=1.0, shuffle=True, seed=1)


def parts(split: Split) -> list[pl.DataFrame]:
    return [split.train, split.test] + ([] if split.valid is None else [split.valid])


def assert_partition(df: pl.DataFrame, split: Split) -> None:
    together = pl.concat(parts(split))
    assert together.height == df.height
    assert together.sort(KEY).equals(df.sort(KEY))
    for part in parts(split):
        assert part.columns == df.columns
        assert part.schema == df.schema


def per_user(df: pl.DataFrame) -> dict[str, int]:
    return dict(df.group_by("user_id").len().iter_rows())


# --- random_split -----------------------------------------------------------------------------


def test_random_split_partitions_rows(data):
    split = random_split(data, valid=0.1, test=0.2, seed=3)
    assert split.valid is not None
    assert_partition(data, split)


def test_random_split_deterministic_per_seed(data):
    a = random_split(data, valid=0.1, test=0.2, seed=5)
    b = random_split(data, valid=0.1, test=0.2, seed=5)
    c = random_split(data, valid=0.1, test=0.2, seed=6)
    assert a.test.equals(b.test)
    assert a.train.equals(b.train)
    assert a.valid is not None and b.valid is not None
    assert a.valid.equals(b.valid)
    assert not a.test.sort(KEY).equals(c.test.sort(KEY))


def test_random_split_per_user_shares(data):
    valid, test = 0.15, 0.25
    split = random_split(data, valid=valid, test=test, seed=0)
    total = per_user(data)
    n_train, n_test = per_user(split.train), per_user(split.test)
    assert split.valid is not None
    n_valid = per_user(split.valid)
    assert set(n_train) == set(total)  # every user keeps training rows
    for user, n in total.items():
        tr, te, va = n_train.get(user, 0), n_test.get(user, 0), n_valid.get(user, 0)
        assert tr + te + va == n
        assert tr >= 1
        if n >= 4:  # large enough that the one-training-row floor does not bind
            assert abs(te - n * test) <= 0.5 + 1e-9
            assert abs(va - n * valid) <= 0.5 + 1e-9
    assert split.test.height == pytest.approx(data.height * test, rel=0.05)


def test_random_split_single_interaction_user_stays_in_train():
    df = pl.DataFrame({"user_id": [1, 2, 2, 2, 2], "item_id": [1, 1, 2, 3, 4]})
    split = random_split(df, valid=0.0, test=0.5, seed=0)
    assert split.valid is None
    assert split.train.filter(pl.col("user_id") == 1).height == 1
    assert split.test.filter(pl.col("user_id") == 2).height == 2
    assert split.train_valid().equals(split.train)


def test_random_split_bad_ratios(data):
    for valid, test in [(0.1, 0.0), (0.5, 0.5), (-0.1, 0.2), (0.1, 1.0)]:
        with pytest.raises(ConfigError, match="split ratios"):
            random_split(data, valid=valid, test=test)


def test_random_split_too_small_is_data_error():
    df = pl.DataFrame({"user_id": [1, 2], "item_id": [1, 2]})
    with pytest.raises(DataError, match="too small"):
        random_split(df, valid=0.0, test=0.2)


def test_train_valid_concatenates(data):
    split = random_split(data, valid=0.2, test=0.2, seed=1)
    assert split.valid is not None
    tv = split.train_valid()
    assert tv.height == split.train.height + split.valid.height
    assert tv.sort(KEY).equals(pl.concat([split.train, split.valid]).sort(KEY))


# --- temporal_split ---------------------------------------------------------------------------


def test_temporal_split_holds_out_latest(data):
    split = temporal_split(data, test=0.2, valid=0.1)
    assert split.valid is not None
    assert_partition(data, split)
    train_max = dict(split.train.group_by("user_id").agg(pl.col("timestamp").max()).iter_rows())
    valid_ts = split.valid.group_by("user_id").agg(
        pl.col("timestamp").min().alias("lo"), pl.col("timestamp").max().alias("hi")
    )
    test_min = dict(split.test.group_by("user_id").agg(pl.col("timestamp").min()).iter_rows())
    assert test_min  # something held out
    for user, lo in test_min.items():
        assert train_max[user] <= lo
    valid_hi = {}
    for user, lo, hi in valid_ts.iter_rows():
        assert train_max[user] <= lo
        valid_hi[user] = hi
    for user, hi in valid_hi.items():
        if user in test_min:
            assert hi <= test_min[user]
    total, n_test = per_user(data), per_user(split.test)
    for user, n in total.items():
        if n >= 4:
            assert abs(n_test.get(user, 0) - 0.2 * n) <= 0.5 + 1e-9


def test_temporal_split_leave_last_one(data):
    split = temporal_split(data, leave_last_n=1)
    assert split.valid is None
    assert_partition(data, split)
    total = per_user(data)
    latest = dict(data.group_by("user_id").agg(pl.col("timestamp").max()).iter_rows())
    n_test = per_user(split.test)
    for user, n in total.items():
        assert n_test.get(user, 0) == (1 if n >= 2 else 0)
    for user, ts in split.test.select("user_id", "timestamp").iter_rows():
        assert ts == latest[user]


def test_temporal_split_leave_last_n_with_valid():
    df = pl.DataFrame(
        {"user_id": [1] * 6, "item_id": list(range(6)), "timestamp": [60, 10, 50, 20, 40, 30]}
    )
    split = temporal_split(df, leave_last_n=2, valid=0.1)
    assert split.valid is not None
    assert sorted(split.test["timestamp"].to_list()) == [50, 60]
    assert sorted(split.valid["timestamp"].to_list()) == [30, 40]
    assert sorted(split.train["timestamp"].to_list()) == [10, 20]


def test_temporal_split_ties_follow_row_order():
    df = pl.DataFrame({"user_id": [1, 1, 1], "item_id": [1, 2, 3], "timestamp": [5, 5, 5]})
    split = temporal_split(df, leave_last_n=1)
    assert split.test["item_id"].to_list() == [3]


def test_temporal_split_needs_timestamps():
    df = pl.DataFrame(
        {"user_id": [1, 1, 2, 2], "item_id": [1, 2, 1, 2]},
    ).with_columns(pl.lit(None, dtype=pl.Int64).alias("timestamp"))
    with pytest.raises(DataError, match="timestamps"):
        temporal_split(df)


def test_temporal_split_bad_config(data):
    with pytest.raises(ConfigError):
        temporal_split(data, test=1.2)
    with pytest.raises(ConfigError):
        temporal_split(data, leave_last_n=0)
    with pytest.raises(ConfigError):
        temporal_split(data, test=None)


# --- global_temporal_split --------------------------------------------------------------------


def test_global_split_cutoff_respected(data):
    cutoff = 1_007_000
    split = global_temporal_split(data, cutoff=cutoff)
    assert split.valid is None
    assert_partition(data, split)
    assert split.train["timestamp"].max() < cutoff
    assert split.test["timestamp"].min() >= cutoff
    assert split.test.height == data.filter(pl.col("timestamp") >= cutoff).height


def test_global_split_default_share(data):
    split = global_temporal_split(data, test=0.2, valid=0.1)
    assert split.valid is not None
    assert_partition(data, split)
    assert split.train["timestamp"].max() < split.valid["timestamp"].min()
    assert split.valid["timestamp"].max() < split.test["timestamp"].min()
    assert split.test.height == pytest.approx(0.2 * data.height, abs=2)
    assert split.valid.height == pytest.approx(0.1 * data.height, abs=2)


def test_global_split_default_cutoff_leaves_exact_share():
    # Ten distinct timestamps and test=0.2: exactly the latest two rows are "after" the
    # 80% quantile (7.2). Truncating the cutoff to 7 also pulls the row at 7 into test.
    df = pl.DataFrame({"user_id": [1] * 10, "item_id": list(range(10)), "timestamp": range(10)})
    split = global_temporal_split(df, test=0.2)
    assert sorted(split.test["timestamp"].to_list()) == [8, 9]
    assert split.train.height == 8


def test_global_split_needs_every_timestamp():
    df = pl.DataFrame({"user_id": [1, 2], "item_id": [1, 2], "timestamp": [1, None]})
    with pytest.raises(DataError, match="timestamp"):
        global_temporal_split(df)


def test_global_split_bad_ratios(data):
    with pytest.raises(ConfigError):
        global_temporal_split(data, test=0.0)
    with pytest.raises(ConfigError):
        global_temporal_split(data, test=0.6, valid=0.5)


def test_global_split_cutoff_before_everything_is_data_error(data):
    with pytest.raises(DataError, match="too small"):
        global_temporal_split(data, cutoff=0)


def test_global_split_valid_with_nothing_before_cutoff_is_data_error(data):
    # With a validation share there is nothing before the cutoff to take it from; this must
    # be a DataError, not numpy's IndexError from a quantile of an empty array.
    with pytest.raises(DataError):
        global_temporal_split(data, cutoff=0, valid=0.1)
