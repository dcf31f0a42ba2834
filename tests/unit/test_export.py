"""Exporting prepared interactions: index columns agree with the models' vocabularies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from hybridrec.data.dataset import InteractionData
from hybridrec.data.export import export_interactions
from hybridrec.data.schema import validate_interactions
from hybridrec.errors import ConfigError, DataError


def _frame(user_ids: list[object], item_ids: list[object]) -> pl.DataFrame:
    n = len(user_ids)
    return validate_interactions(
        pl.DataFrame(
            {
                "user_id": user_ids,
                "item_id": item_ids,
                "weight": np.linspace(1.0, 3.0, n),
                "timestamp": np.arange(n) + 1_600_000_000,
            }
        )
    )


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_indices_match_the_vocabularies(tmp_path: Path, fmt: str) -> None:
    df = _frame([30, 10, 20, 10, 30], [7, 5, 9, 7, 5])
    result = export_interactions(df, tmp_path, fmt=fmt)  # type: ignore[arg-type]
    read = pl.read_parquet if fmt == "parquet" else pl.read_csv
    table = read(result.files["interactions"])
    assert table.columns == [
        "user_id",
        "item_id",
        "weight",
        "timestamp",
        "user_index",
        "item_index",
    ]
    assert (result.rows, result.users, result.items) == (5, 3, 3)
    data = InteractionData.from_frame(df)
    assert table["user_index"].to_list() == data.users.index(table["user_id"].to_numpy()).tolist()
    assert table["item_index"].to_list() == data.items.index(table["item_id"].to_numpy()).tolist()
    users = read(result.files["user_ids"]).sort("index")
    assert users.columns == ["index", "id"]
    assert users["id"].to_list() == data.users.to_list() == [10, 20, 30]
    items = read(result.files["item_ids"]).sort("index")
    assert items["id"].to_list() == data.items.to_list()
    # The weights as the matrix holds them, cell by cell.
    m = data.matrix.toarray()
    got = table["weight"].to_numpy()
    want = m[table["user_index"].to_numpy(), table["item_index"].to_numpy()]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_string_ids_no_timestamps_and_catalog(tmp_path: Path) -> None:
    df = validate_interactions(
        pl.DataFrame({"user_id": ["b", "a", "c"], "item_id": ["y", "x", "y"]})
    )
    items = pl.DataFrame({"item_id": ["x", "y"], "categories": [["a", "b"], ["c"]]})
    result = export_interactions(df, tmp_path, fmt="csv", items=items)
    table = pl.read_csv(result.files["interactions"])
    assert "timestamp" not in table.columns
    assert dict(zip(table["user_id"], table["user_index"], strict=True)) == {"a": 0, "b": 1, "c": 2}
    catalog = pl.read_csv(result.files["items"])
    assert catalog["categories"].to_list() == ["a|b", "c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "interactions.csv", "item_ids.csv", "items.csv", "user_ids.csv",
    ]  # fmt: skip


def test_bad_format_and_empty_table(tmp_path: Path) -> None:
    df = _frame([1], [2])
    with pytest.raises(ConfigError, match="unknown format 'json'"):
        export_interactions(df, tmp_path, fmt="json")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="no interactions"):
        export_interactions(df.head(0), tmp_path)
