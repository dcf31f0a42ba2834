"""Tests for hybridrec.data.transform: implicit conversion, deduplication, k-core."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from hybridrec.data import transform
from hybridrec.data.transform import deduplicate, kcore_filter, to_implicit
from hybridrec.errors import ConfigError, DataError


def frame(users, items, weights=None, timestamps=None, events=None) -> pl.DataFrame:
    n = len(users)
    return pl.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "weight": [1.0] * n if weights is None else [float(w) for w in weights],
            "timestamp": [None] * n if timestamps is None else timestamps,
            "event_type": ["rating"] * n if events is None else events,
        },
        schema_overrides={"timestamp": pl.Int64},
    )


@pytest.fixture
def ratings() -> pl.DataFrame:
    return frame([1, 1, 2, 2, 3], [10, 20, 10, 30, 20], weights=[5, 3.5, 4, 1, 2])


# --- to_implicit ------------------------------------------------------------------------------


def test_threshold_keeps_at_least_min_rating_as_one(ratings):
    out = to_implicit(ratings, mode="threshold", min_rating=4.0)
    assert out.select("user_id", "item_id").rows() == [(1, 10), (2, 10)]  # 4.0 itself kept
    assert out["weight"].to_list() == [1.0, 1.0]
    assert out.columns == ratings.columns


def test_confidence_keeps_ratings(ratings):
    out = to_implicit(ratings, mode="confidence", min_rating=3.5)
    assert out["weight"].to_list() == [5.0, 3.5, 4.0]
    assert to_implicit(ratings, mode="confidence")["weight"].to_list() == [5, 3.5, 4, 1, 2]


def test_binary_and_keep(ratings):
    out = to_implicit(ratings, mode="binary", min_rating=100)  # binary ignores the threshold
    assert out.height == ratings.height
    assert out["weight"].to_list() == [1.0] * 5
    assert to_implicit(ratings, mode="keep").equals(ratings)


def test_threshold_without_min_rating_is_config_error(ratings):
    with pytest.raises(ConfigError, match="min_rating"):
        to_implicit(ratings, mode="threshold")


def test_unknown_mode_is_config_error(ratings):
    with pytest.raises(ConfigError, match="unknown implicit mode 'nope'"):
        to_implicit(ratings, mode="nope", min_rating=1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["threshold", "confidence"])
def test_nothing_left_is_data_error(ratings, mode):
    with pytest.raises(DataError, match="no interactions left"):
        to_implicit(ratings, mode=mode, min_rating=5.5)


# --- deduplicate ------------------------------------------------------------------------------


@pytest.fixture
def repeated() -> pl.DataFrame:
    # (1, 10) three times, out of time order; (2, 10) once; (1, 20) twice with a tie.
    return frame(
        [1, 2, 1, 1, 1, 1],
        [10, 10, 10, 10, 20, 20],
        weights=[2, 7, 5, 1, 3, 4],
        timestamps=[200, 50, 300, 100, 10, 10],
        events=["b", "x", "c", "a", "p", "q"],
    )


def cell(df: pl.DataFrame, user: int, item: int) -> dict:
    rows = df.filter((pl.col("user_id") == user) & (pl.col("item_id") == item))
    assert rows.height == 1
    return rows.row(0, named=True)


@pytest.mark.parametrize(
    ("how", "w10", "w20"),
    [("last", 5.0, 4.0), ("first", 1.0, 3.0), ("sum", 8.0, 7.0), ("max", 5.0, 4.0)],
)
def test_dedup_strategies(repeated, how, w10, w20):
    out = deduplicate(repeated, how=how)
    assert out.height == 3
    assert out.columns == repeated.columns
    assert out.schema == repeated.schema
    assert cell(out, 1, 10)["weight"] == w10
    assert cell(out, 1, 20)["weight"] == w20
    assert cell(out, 2, 10)["weight"] == 7.0
    assert cell(out, 1, 10)["timestamp"] == 300  # latest timestamp kept
    assert cell(out, 1, 10)["event_type"] == "c"


def test_dedup_last_vs_first_differ_from_max():
    df = frame([1, 1], [1, 1], weights=[9, 2], timestamps=[1, 2])
    assert deduplicate(df, "last")["weight"].to_list() == [2.0]
    assert deduplicate(df, "first")["weight"].to_list() == [9.0]
    assert deduplicate(df, "max")["weight"].to_list() == [9.0]


def test_dedup_null_timestamps_fall_back_to_row_order():
    df = frame([1, 1, 1], [1, 1, 1], weights=[1, 2, 3])
    assert deduplicate(df, "last")["weight"].to_list() == [3.0]
    assert deduplicate(df, "first")["weight"].to_list() == [1.0]


def test_dedup_no_duplicates_keeps_all_rows(ratings):
    out = deduplicate(ratings)
    assert out.sort("user_id", "item_id").equals(ratings.sort("user_id", "item_id"))


def _dedup_by_grouping(df: pl.DataFrame, how: str, monkeypatch: pytest.MonkeyPatch) -> pl.DataFrame:
    """`deduplicate` made to take its general path (sort, then group) whatever the data."""
    with monkeypatch.context() as m:
        m.setattr(transform, "has_repeated_pairs", lambda _: True)
        return deduplicate(df, how)  # type: ignore[arg-type]


def _shuffled_log(rng: np.random.Generator, n: int, *, repeats: bool) -> pl.DataFrame:
    """``n`` events out of (user, item) order; every pair distinct unless ``repeats``."""
    keys = rng.choice(400, size=n, replace=repeats)
    return frame(
        (keys // 20 - 7).tolist(),  # negative ids too
        (keys % 20 * 1000).tolist(),
        weights=rng.integers(1, 6, size=n).tolist(),
        timestamps=[None if t % 5 == 0 else int(t) for t in rng.integers(0, 50, size=n)],
        events=[f"e{e}" for e in rng.integers(0, 3, size=n)],
    )


@pytest.mark.parametrize("how", ["last", "first", "sum", "max"])
@pytest.mark.parametrize("repeats", [False, True])
@pytest.mark.parametrize("ids", ["int", "str"])
def test_dedup_without_repeats_equals_the_grouping_path(how, repeats, ids, monkeypatch):
    rng = np.random.default_rng(7)
    for _ in range(5):
        df = _shuffled_log(rng, 150, repeats=repeats)
        if ids == "str":
            df = df.with_columns(pl.col("user_id", "item_id").cast(pl.String))
        assert transform.has_repeated_pairs(df) == repeats
        out = deduplicate(df, how)
        assert out.equals(_dedup_by_grouping(df, how, monkeypatch))
        assert out.schema == df.schema
        # Already in (user, item) order and distinct: returned as it is.
        assert deduplicate(out, how).equals(out)


def test_dedup_fast_path_keys_too_wide_for_one_int64(monkeypatch):
    # (user span) x (item span) overflows int64: sorted by the two columns instead.
    df = frame([2**62, -(2**62), 0, 2**62], [5, 2**40, -(2**40), -3], weights=[1, 2, 3, 4])
    out = deduplicate(df, "last")
    assert out.equals(_dedup_by_grouping(df, "last", monkeypatch))
    assert out["user_id"].to_list() == [-(2**62), 0, 2**62, 2**62]


@pytest.mark.parametrize(("how", "weight"), [("sum", 0.0), ("max", None), ("last", None)])
def test_dedup_null_weight_without_repeats_aggregates_as_before(how, weight, monkeypatch):
    # A lone null sums to 0 (and stays null otherwise), as the grouping path has it.
    df = pl.DataFrame(
        {
            "user_id": [2, 1],
            "item_id": [1, 1],
            "weight": [None, 1.0],
            "timestamp": [None, 3],
            "event_type": ["x", "y"],
        },
        schema_overrides={"timestamp": pl.Int64},
    )
    out = deduplicate(df, how)
    assert out.equals(_dedup_by_grouping(df, how, monkeypatch))
    assert out["weight"].to_list() == [1.0, weight]


def test_has_repeated_pairs():
    assert not transform.has_repeated_pairs(frame([], []))
    assert not transform.has_repeated_pairs(frame([1], [1]))
    assert not transform.has_repeated_pairs(frame([2, 1, 1], [1, 2, 1]))
    assert transform.has_repeated_pairs(frame([2, 1, 2], [1, 2, 1]))
    # Same item id for different users, same user for different items: no repeat.
    assert not transform.has_repeated_pairs(frame(["a", "b", "a"], ["x", "x", "y"]))
    assert transform.has_repeated_pairs(frame(["b", "a", "b"], ["x", "x", "x"]))


def test_has_repeated_pairs_checks_hash_collisions_exactly(monkeypatch):
    # Every row hashing alike (a collision on each pair) must not read as a repeat.
    def collide(self: pl.DataFrame, seed: int = 0) -> pl.Series:
        return pl.Series(np.zeros(self.height, dtype=np.uint64))

    monkeypatch.setattr(pl.DataFrame, "hash_rows", collide)
    assert not transform.has_repeated_pairs(frame([2, 1, 3], [1, 2, 1]))
    assert transform.has_repeated_pairs(frame([2, 1, 2], [1, 2, 1]))


def test_dedup_unknown_how():
    with pytest.raises(ConfigError, match="unknown dedup"):
        deduplicate(frame([1], [1]), how="mean")  # type: ignore[arg-type]


# --- kcore_filter -----------------------------------------------------------------------------


@pytest.fixture
def chain() -> pl.DataFrame:
    # Round 1: item 6 (1 user) goes, then user 4 (now 1 item) goes. That leaves item 5 with
    # one user, so round 2 removes item 5 and then user 3, after which all counts are >= 2.
    return frame([1, 1, 2, 2, 3, 3, 4, 4], [1, 2, 1, 2, 2, 5, 5, 6])


def test_kcore_iterates_until_stable(chain):
    out = kcore_filter(chain, min_user=2, min_item=2)
    assert sorted(out.select("user_id", "item_id").rows()) == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert out.group_by("user_id").len()["len"].min() >= 2
    assert out.group_by("item_id").len()["len"].min() >= 2


def test_kcore_one_round_is_not_enough(chain):
    once = kcore_filter(chain, min_user=2, min_item=2, max_rounds=1)
    # The single-round result still has an item with one interaction: not a 2-core.
    assert once.group_by("item_id").len()["len"].min() < 2
    assert once.height > kcore_filter(chain, min_user=2, min_item=2).height


def test_kcore_defaults_keep_everything(chain):
    assert kcore_filter(chain).equals(chain)


def test_kcore_user_only():
    df = frame([1, 1, 1, 2, 3, 3], [1, 2, 3, 1, 1, 2])
    out = kcore_filter(df, min_user=2)
    assert sorted(out["user_id"].unique().to_list()) == [1, 3]
    assert out.height == 5


def test_kcore_nothing_left_is_data_error(chain):
    with pytest.raises(DataError, match=r"min_user=5, min_item=5"):
        kcore_filter(chain, min_user=5, min_item=5)


# --- auto conversion --------------------------------------------------------------------------


def _resolve(df, **kw):
    from hybridrec.data.transform import resolve_conversion

    args = {"implicit": "auto", "min_rating": None, "dedup": "auto"} | kw
    return resolve_conversion(df, **args)


@pytest.mark.parametrize(
    ("top", "threshold"), [(5.0, 4.0), (4.5, 4.0), (10.0, 8.0), (7.0, 8.0), (100.0, 80.0)]
)
def test_auto_thresholds_ratings_on_their_own_scale(top, threshold):
    df = frame([1, 1, 2, 2], [10, 20, 10, 30], weights=[top, top / 2, 1, top])
    conv = _resolve(df)
    assert conv.mode == "threshold"
    assert conv.min_rating == pytest.approx(threshold)
    assert conv.dedup == "last"


def test_auto_rescues_users_without_a_high_rating_by_their_own_mean():
    from hybridrec.data.transform import apply_conversion

    # User 3 never rates >= 4: they keep the items at or above their own mean (2.0).
    df = frame([1, 1, 3, 3, 3], [10, 20, 10, 20, 30], weights=[5, 2, 1, 3, 2])
    conv = _resolve(df)
    out = apply_conversion(df, conv)
    assert sorted(out.select("user_id", "item_id").rows()) == [(1, 10), (3, 20), (3, 30)]
    assert set(out["weight"].to_list()) == {1.0}
    # Held-out data gets the plain threshold: no rescue.
    held = apply_conversion(df, conv, training=False)
    assert held.select("user_id", "item_id").rows() == [(1, 10)]


def test_auto_on_events_without_weights_is_binary_and_repeats_become_counts():
    from hybridrec.data.transform import apply_conversion

    events = ["interaction"] * 3
    once = frame([1, 2, 2], [10, 10, 20], events=events)
    conv = _resolve(once)
    assert conv.mode == "binary"
    repeated = frame([1, 1, 2], [10, 10, 20], events=events, timestamps=[1, 2, 3])
    conv = _resolve(repeated)
    assert (conv.mode, conv.dedup) == ("confidence", "sum")
    out = apply_conversion(repeated, conv).sort("user_id")
    assert out.select("user_id", "item_id", "weight").rows() == [(1, 10, 2.0), (2, 20, 1.0)]


def test_auto_on_a_weight_column_keeps_positive_weights_as_confidence():
    from hybridrec.data.transform import apply_conversion

    df = frame([1, 1, 2], [10, 20, 10], weights=[3, 0, 2.5], events=["purchase"] * 3)
    conv = _resolve(df)
    assert conv.mode == "confidence"
    out = apply_conversion(df, conv)
    assert sorted(out.select("item_id", "weight").rows()) == [(10, 2.5), (10, 3.0)]


def test_explicit_modes_are_kept_and_a_configured_threshold_wins():
    df = frame([1, 2], [10, 20], weights=[5, 3])
    assert _resolve(df, min_rating=3.0).min_rating == 3.0
    assert not _resolve(df, min_rating=3.0).rescue_by_user_mean
    assert _resolve(df, implicit="binary").mode == "binary"


def test_threshold_dropping_everything_names_the_setting(ratings):
    with pytest.raises(DataError, match="implicit"):
        to_implicit(ratings, mode="threshold", min_rating=6.0)
