"""Reading a trained pipeline back from the model store."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from hybridrec.bundle.store import ModelStore
from hybridrec.errors import ConfigError
from hybridrec.models.base import Recommender

__all__ = ["TrainedPipeline", "load_pipeline"]


@dataclass
class TrainedPipeline:
    """A version of the store: its manifest, catalog, and models loaded on first use."""

    path: Path
    manifest: dict[str, Any]
    _models: dict[str, Recommender] = field(default_factory=dict)
    _items: pl.DataFrame | None = None

    @property
    def version(self) -> str:
        """The version name."""
        return str(self.manifest["version"])

    @property
    def model_names(self) -> list[str]:
        """Models in this version, in training order."""
        return list(self.manifest["models"])

    @property
    def default_model(self) -> str:
        """The model that scored best on the held-out test (or the first one)."""
        return str(self.manifest.get("default_model") or self.model_names[0])

    def model(self, name: str | None = None) -> Recommender:
        """Load (once) and return model ``name`` (default: `default_model`).

        Raises:
            ConfigError: No model of that name in this version; lists the ones there are.
        """
        name = name or self.default_model
        if name not in self.manifest["models"]:
            raise ConfigError(
                f"no model {name!r} in version {self.version}; "
                f"available: {', '.join(self.model_names)}"
            )
        if name not in self._models:
            self._models[name] = Recommender.load(self.path / self.manifest["models"][name]["file"])
        return self._models[name]

    @property
    def items(self) -> pl.DataFrame | None:
        """The item catalog saved with the version, if any."""
        if self._items is None and (self.path / "items.parquet").is_file():
            self._items = pl.read_parquet(self.path / "items.parquet")
        return self._items


def load_pipeline(model_dir: str | Path, version: str | None = None) -> TrainedPipeline:
    """Open ``version`` (default: current) of the store at ``model_dir``."""
    store = ModelStore(model_dir)
    path = store.path(version)
    return TrainedPipeline(path=path, manifest=store.manifest(path.name))
