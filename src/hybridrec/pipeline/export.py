"""Exporting the training data for an external trainer: the same loading ``train`` does."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from hybridrec.config import DataConfig
from hybridrec.data.export import ExportFormat, ExportResult, export_interactions
from hybridrec.pipeline.train import prepare_data, report_preparation

__all__ = ["export_training_data"]


def export_training_data(
    cfg: DataConfig,
    out_dir: str | Path,
    *,
    fmt: ExportFormat = "parquet",
    data_home: str | Path | None = None,
    interactions: str | Path | None = None,
    items: str | Path | None = None,
    console: Console | None = None,
) -> ExportResult:
    """Load and prepare the configured data as ``train`` would, then write it for export.

    Args:
        cfg: The data config (source, column mapping, implicit conversion, k-core).
        out_dir: Directory to write (see `hybridrec.data.export` for the layout).
        fmt: ``parquet`` or ``csv``.
        data_home: Where registered datasets live.
        interactions: An interactions file replacing the configured source.
        items: The catalog that goes with ``interactions``.
        console: Where to print what preprocessing did.

    Raises:
        ConfigError: An unknown format or a bad data config.
        DataError: The data cannot be read or nothing is left after preparation.
    """
    prepared = prepare_data(cfg, data_home=data_home, interactions=interactions, items=items)
    report_preparation(prepared, console)
    return export_interactions(prepared.interactions, out_dir, fmt=fmt, items=prepared.items)
