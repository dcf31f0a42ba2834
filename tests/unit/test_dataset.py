"""Tests for hybridrec.data.dataset: `InteractionData` and its deferred timestamp matrix.

The timestamp matrix costs as much as the interaction matrix to build; only the content
model's time decay reads it, and only without an events table. It is built on first read.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from hybridrec.config import PipelineConfig
from hybridrec.data import dataset
from hybridrec.data.dataset import InteractionData
from hybridrec.data.matrix import interaction_matrix
from hybridrec.models import create_model
from hybridrec.pipeline.train import train_pipeline

ALS = {"factors": 8, "iterations": 3, "use_gpu": False, "random_state": 0}
CONTENT = {"half_life_days": 30.0, "show_progress": False}


def catalog(data: InteractionData, extra: int = 5) -> pl.DataFrame:
    """Titles for the planted items (cluster words), plus ``extra`` items never touched."""
    ids = np.concatenate([data.items.ids, data.items.ids.max() + 1 + np.arange(extra)])
    words = ("space rocket", "love kiss", "ghost crypt")
    return pl.DataFrame(
        {"item_id": ids, "title": [f"{words[(i - 1000) % 3]} item {i}" for i in ids]}
    )


def test_from_frame_builds_the_timestamp_matrix_on_first_read(planted):
    data = InteractionData.from_frame(planted)
    assert not data.timestamps_built
    ts = data.timestamps
    assert data.timestamps_built
    expected = interaction_matrix(
        planted, data.users, data.items, column="timestamp", aggregate="max"
    )
    assert ts is not None and ts.dtype == np.float64 and ts.shape == data.shape
    assert (ts != expected).nnz == 0
    assert data.timestamps is ts  # built once


def test_data_without_times_reads_none():
    df = pl.DataFrame(
        {
            "user_id": [1, 2],
            "item_id": [5, 6],
            "weight": [1.0, 1.0],
            "timestamp": [None, None],
            "event_type": ["x", "x"],
        },
        schema_overrides={"timestamp": pl.Int64},
    )
    data = InteractionData.from_frame(df)
    assert data.timestamps is None
    assert data.timestamps_built


def test_a_given_matrix_or_none_is_kept_as_it_is(planted_data):
    ts = sp.csr_matrix(planted_data.matrix, dtype=np.float64)
    given = InteractionData(planted_data.matrix, planted_data.users, planted_data.items, ts)
    assert given.timestamps_built and given.timestamps is ts
    bare = InteractionData(planted_data.matrix, planted_data.users, planted_data.items)
    assert bare.timestamps_built and bare.timestamps is None


def test_replace_carries_the_timestamps(planted):
    data = InteractionData.from_frame(planted)
    other = dataclasses.replace(data, items_table=pl.DataFrame({"item_id": [1000]}))
    assert other.timestamps is data.timestamps is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.timestamps = None  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("popularity", {}),
        ("popularity", {"window_days": 1}),
        ("als", ALS),
        ("itemknn", {"neighbors": 10}),
        ("ease", {}),
    ],
)
def test_models_that_read_no_timestamps_leave_them_unbuilt(planted, name, params):
    data = InteractionData.from_frame(planted)
    create_model(name, params).fit(data)
    assert not data.timestamps_built


def test_content_decay_reads_times_from_the_events_not_the_matrix(planted, planted_data):
    # The catalog has items the interactions lack: the model widens the item vocabulary.
    data = InteractionData.from_frame(planted, items_table=catalog(planted_data))
    model = create_model("content", CONTENT).fit(data)
    assert model.decay_ is not None  # type: ignore[attr-defined]
    assert not data.timestamps_built


def test_content_decay_without_events_reads_the_timestamp_matrix(planted, planted_data):
    table = catalog(planted_data)
    from_events = InteractionData.from_frame(planted, items_table=table)
    reads: list[int] = []

    def build() -> sp.csr_matrix | None:
        reads.append(1)
        return from_events.timestamps

    data = InteractionData(
        from_events.matrix, from_events.users, from_events.items, build, items_table=table
    )
    model = create_model("content", CONTENT).fit(data)
    assert reads == [1]
    expected = create_model("content", CONTENT).fit(from_events)
    got, want = model.decay_, expected.decay_  # type: ignore[attr-defined]
    assert got.shape == want.shape
    np.testing.assert_allclose(got.toarray(), want.toarray(), rtol=1e-6)


def _spy_matrices(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The value column of every matrix `InteractionData.from_frame` builds, in order."""
    columns: list[str] = []
    real = dataset.interaction_matrix

    def spy(df: pl.DataFrame, users: Any, items: Any, **kw: Any) -> sp.csr_matrix:
        columns.append(kw.get("column", "weight"))
        return real(df, users, items, **kw)

    monkeypatch.setattr(dataset, "interaction_matrix", spy)
    return columns


@pytest.mark.parametrize("evaluate", [False, True])
def test_train_builds_no_matrix_its_models_do_not_read(
    planted, planted_data, tmp_path: Path, monkeypatch, evaluate
):
    events, items = tmp_path / "events.parquet", tmp_path / "items.parquet"
    planted.write_parquet(events)
    catalog(planted_data).write_parquet(items)
    columns = _spy_matrices(monkeypatch)
    cfg = PipelineConfig.model_validate(
        {"models": {"popularity": {"window_days": 7}, "als": ALS, "content": CONTENT}}
    )
    result = train_pipeline(
        cfg, tmp_path / "models", train_path=events, items_path=items, evaluate=evaluate
    )
    assert columns and set(columns) == {"weight"}
    assert (result.path / "manifest.json").is_file()
