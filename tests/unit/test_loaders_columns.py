"""Interactions files are read narrowly: only the columns the canonical table is built from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from hybridrec.data import loaders
from hybridrec.data.loaders import load_interactions
from hybridrec.errors import DataError


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The ``columns`` each `read_table` call asked for."""
    calls: list[Any] = []
    real = loaders.read_table

    def spy(path: Any, columns: Any = None) -> pl.DataFrame:
        calls.append(None if columns is None else list(columns))
        return real(path, columns)

    monkeypatch.setattr(loaders, "read_table", spy)
    return calls


def _log() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "session": ["s1", "s2", "s3"],
            "customer": [3, 1, 2],
            "sku": [10, 11, 10],
            "qty": [1.0, 2.0, 5.0],
            "timestamp": [1_600_000_000, 1_600_000_100, 1_600_000_200],
            "notes": ["a", "b", "c"],
        }
    )


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_unused_columns_are_not_read(tmp_path: Path, suffix: str, asked: list[Any]) -> None:
    path = tmp_path / f"log{suffix}"
    getattr(_log(), "write_parquet" if suffix == ".parquet" else "write_csv")(path)
    mapping = {"user_id": "customer", "item_id": "sku", "weight": "qty"}
    df = load_interactions(path, mapping)
    assert asked == [["customer", "sku", "qty", "timestamp"]]
    assert df.columns == ["user_id", "item_id", "weight", "timestamp", "event_type"]
    assert df["user_id"].to_list() == [3, 1, 2]
    assert df["weight"].to_list() == [1.0, 2.0, 5.0]


def test_a_missing_mapped_column_still_names_every_column(tmp_path: Path, asked: list[Any]) -> None:
    path = tmp_path / "log.parquet"
    _log().write_parquet(path)
    with pytest.raises(DataError, match=r"'nope'.*found: session, customer, sku, qty"):
        load_interactions(path, {"user_id": "nope", "item_id": "sku"})
    assert asked == [None]
    with pytest.raises(
        DataError, match=r"missing columns 'user_id', 'item_id' \(found: session, customer"
    ):
        load_interactions(path)
