"""The chunked synthetic log writer: sizes, skew, time order, formats, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hybridrec.data.loaders import load_files
from hybridrec.data.synthesize import synthesize_log
from hybridrec.errors import ConfigError


def test_writes_every_row_across_uneven_chunks(tmp_path: Path) -> None:
    result = synthesize_log(
        tmp_path, users=500, items=200, interactions=10_007, chunk_rows=1_000, seed=3
    )
    df = pl.read_parquet(result.interactions)
    assert df.height == result.rows == 10_007
    assert df.columns == ["user_id", "item_id", "timestamp"]
    assert df["user_id"].min() >= 0 and df["user_id"].max() < 500  # type: ignore[operator]
    assert df["item_id"].min() >= 0 and df["item_id"].max() < 200  # type: ignore[operator]
    assert result.users == df["user_id"].n_unique()
    assert result.items_with_events == df["item_id"].n_unique()
    # In time order over the whole log, so every user's events come in increasing time.
    assert df["timestamp"].is_sorted()
    per_user = df.group_by("user_id").agg(pl.col("timestamp").is_sorted().alias("ok"))
    assert per_user["ok"].all()


def test_popularity_follows_the_skew(tmp_path: Path) -> None:
    skewed = synthesize_log(
        tmp_path / "a", users=2_000, items=1_000, interactions=50_000, item_skew=1.0
    )
    flat = synthesize_log(
        tmp_path / "b", users=2_000, items=1_000, interactions=50_000, item_skew=0
    )
    # Top 1% of items: about 1/H(1000) * H(10) ~ 39% under rank^-1, about 1% when uniform.
    assert 0.3 < skewed.top_item_share < 0.5
    assert flat.top_item_share < 0.03
    counts = pl.read_parquet(skewed.interactions)["item_id"].value_counts()["count"]
    # The most popular item is not simply id 0: ranks are shuffled over the ids.
    top = pl.read_parquet(skewed.interactions)["item_id"].mode()[0]
    assert counts.max() > 20 * counts.median()  # type: ignore[operator]
    assert top != 0


def test_same_arguments_same_files(tmp_path: Path) -> None:
    a = synthesize_log(tmp_path / "a", users=100, items=50, interactions=3_000, chunk_rows=700)
    b = synthesize_log(tmp_path / "b", users=100, items=50, interactions=3_000, chunk_rows=700)
    c = synthesize_log(
        tmp_path / "c", users=100, items=50, interactions=3_000, chunk_rows=700, seed=1
    )
    first = pl.read_parquet(a.interactions)
    assert first.equals(pl.read_parquet(b.interactions))
    assert not first.equals(pl.read_parquet(c.interactions))
    assert pl.read_parquet(a.items).equals(pl.read_parquet(b.items))


def test_csv_string_ids_and_ratings_load_as_a_dataset(tmp_path: Path) -> None:
    result = synthesize_log(
        tmp_path,
        users=300,
        items=80,
        interactions=4_000,
        fmt="csv",
        ratings=True,
        string_ids=True,
        chunk_rows=1_500,
    )
    assert result.interactions.name == "interactions.csv"
    assert result.items.name == "items.csv"
    raw = load_files(result.interactions, items=result.items)
    df = raw.interactions
    assert df.height == 4_000
    assert df["user_id"].dtype == pl.String and df["user_id"].str.starts_with("u").all()
    assert df["item_id"].str.starts_with("i").all()
    assert (df["event_type"] == "rating").all()
    assert set(np.unique(df["weight"].to_numpy())) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert raw.items is not None and raw.items.height == 80
    assert raw.items.columns == ["item_id", "title", "categories", "text"]
    cats = raw.items["categories"]
    assert cats.dtype == pl.List(pl.String) and cats.list.len().min() >= 1  # type: ignore[operator]
    # The text names the item's first category, so content models have a signal.
    first = raw.items.select(
        pl.col("text").str.contains(pl.col("categories").list.first()).alias("hit")
    )
    assert first["hit"].all()
    # No temp file left behind by the atomic writes.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["interactions.csv", "items.csv"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"users": 0}, "users must be at least 1"),
        ({"interactions": -5}, "interactions must be at least 1"),
        ({"item_skew": -1.0}, "skews must be >= 0"),
        ({"fmt": "json"}, "unknown format 'json'"),
    ],
)
def test_bad_arguments_are_config_errors(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"users": 10, "items": 10, "interactions": 100} | kwargs
    with pytest.raises(ConfigError, match=message):
        synthesize_log(tmp_path, **args)  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())
