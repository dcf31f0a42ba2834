"""Reading a trained pipeline back from the model store (a `Bundle`)."""

from __future__ import annotations

from pathlib import Path

from hybridrec.bundle import Bundle, open_bundle

__all__ = ["TrainedPipeline", "load_pipeline"]

#: A trained pipeline is an opened bundle.
TrainedPipeline = Bundle


def load_pipeline(
    model_dir: str | Path, version: str | None = None, *, allow_pickle: bool = False
) -> Bundle:
    """Open ``version`` (default: current) of the store at ``model_dir``, hashes checked."""
    return open_bundle(model_dir, version, allow_pickle=allow_pickle)
