"""The lean deduplication for integer ids (one pair key, ranges of users) equals the general one."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from hybridrec.data import transform
from hybridrec.data.schema import validate_interactions
from hybridrec.data.transform import deduplicate, has_repeated_pairs


def _log(seed: int, with_times: bool = True) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = 400
    ts = rng.integers(0, 5, size=n) + 1_600_000_000  # many equal times: row order breaks ties
    df = pl.DataFrame(
        {
            "user_id": rng.integers(-3, 40, size=n) * 7,
            "item_id": rng.integers(0, 12, size=n) + 1000,
            "weight": rng.integers(1, 6, size=n).astype(np.float64),
            "timestamp": pl.Series(ts).scatter([0, 5, 9], None) if with_times else [None] * n,
        },
        schema_overrides={"timestamp": pl.Int64},
    )
    return validate_interactions(df)


def _general(df: pl.DataFrame, how: str) -> pl.DataFrame:
    """The general path (text ids), ids cast back and put in integer (user, item) order."""
    text = df.with_columns(pl.col("user_id", "item_id").cast(pl.String))
    out = deduplicate(text, how)  # type: ignore[arg-type]
    return out.with_columns(pl.col("user_id", "item_id").cast(pl.Int64)).sort("user_id", "item_id")


@pytest.mark.parametrize("how", ["last", "first", "sum", "max"])
@pytest.mark.parametrize("with_times", [True, False])
def test_lean_path_equals_the_general_one(
    monkeypatch: pytest.MonkeyPatch, how: str, with_times: bool
) -> None:
    df = _log(1, with_times)
    want = _general(df, how)
    for part_rows in (1_000_000, 37):  # one range, and about eleven
        monkeypatch.setattr(transform, "DEDUP_PART_ROWS", part_rows)
        got = deduplicate(df, how)  # type: ignore[arg-type]
        assert got.schema == df.schema
        assert got.equals(want), f"{how}, {part_rows} rows a range"
        assert not has_repeated_pairs(got)


def test_repeats_found_in_any_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transform, "DEDUP_PART_ROWS", 10)
    users = list(range(100))
    df = validate_interactions(pl.DataFrame({"user_id": users, "item_id": [5] * 100}))
    assert not has_repeated_pairs(df)
    # One repeat, among the last users (their own range): still found.
    repeated = pl.concat([df, df.filter(pl.col("user_id") == 97)])
    assert has_repeated_pairs(repeated)
    assert deduplicate(repeated, "sum").filter(pl.col("user_id") == 97)["weight"].item() == 2.0


def test_several_event_types_take_the_general_path() -> None:
    df = validate_interactions(
        pl.DataFrame(
            {
                "user_id": [1, 1, 2],
                "item_id": [3, 3, 3],
                "timestamp": [10, 20, 5],
                "event_type": ["view", "buy", "view"],
            }
        )
    )
    out = deduplicate(df, "sum")
    assert out.rows() == [(1, 3, 2.0, 20, "buy"), (2, 3, 1.0, 5, "view")]
