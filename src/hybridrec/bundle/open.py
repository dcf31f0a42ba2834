"""Opening what a model directory holds: the store's version, or loose files as a fallback."""

from __future__ import annotations

import logging
from pathlib import Path

from hybridrec.bundle.bundle import Bundle
from hybridrec.bundle.store import ModelStore
from hybridrec.errors import DataError

__all__ = ["open_bundle"]

log = logging.getLogger(__name__)


def open_bundle(
    model_dir: str | Path,
    version: str | None = None,
    *,
    verify: bool = True,
    mmap: bool = True,
    allow_pickle: bool = False,
) -> Bundle:
    """Open ``version`` (default: current) of the store at ``model_dir``.

    When the directory has no store version but holds loose artifacts (factor files,
    similarity, precomputed recommendations: see `hybridrec.bundle.importer`), they are
    imported in memory and served as they are, and a warning says so.

    Raises:
        DataError: Nothing to load there (or no such version).
        IntegrityError: A file of the version does not match its manifest.
    """
    store = ModelStore(model_dir)
    if version is not None or store.current() is not None:
        return Bundle.open(store.path(version), verify=verify, mmap=mmap)
    from hybridrec.bundle.importer import find_loose, import_loose

    if find_loose(model_dir):
        result = import_loose(model_dir, allow_pickle=allow_pickle)
        log.warning(
            "%s: no bundle; serving loose files (%s). Run 'hybridrec bundle import' to make "
            "a verified bundle.",
            model_dir,
            "; ".join(f"{k}: {v}" for k, v in result.sources.items()),
        )
        return Bundle.from_models(
            model_dir,
            result.models,
            top_n=result.top_n,
            items=result.items,
            default_model=result.default_model,
            extra={"source": {"loose": str(model_dir), **result.sources}},
        )
    raise DataError(
        f"{model_dir}: no trained model here (run 'hybridrec train --model-dir {model_dir}')"
    )
