"""Opening what a model directory holds: the store's version, or loose files as a fallback."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hybridrec.bundle.bundle import Bundle, BundleOptions, TopN, write_bundle
from hybridrec.bundle.format import Compression
from hybridrec.bundle.store import ModelStore
from hybridrec.errors import DataError

__all__ = ["open_bundle", "save_derived"]

log = logging.getLogger(__name__)


def open_bundle(
    model_dir: str | Path,
    version: str | None = None,
    *,
    verify: bool = True,
    mmap: bool = True,
    allow_pickle: bool = False,
    lazy: bool = True,
) -> Bundle:
    """Open ``version`` (default: current) of the store at ``model_dir``.

    Hashes are checked as the files are used (``lazy``, see `Bundle.open`): an answer from
    precomputed rows hashes the blocks it reads, not the whole version.

    When the directory has no store version but holds loose artifacts (factor files,
    similarity, precomputed recommendations: see `hybridrec.bundle.importer`), they are
    imported in memory and served as they are, and a warning says so.

    Raises:
        DataError: Nothing to load there (or no such version).
        IntegrityError: A file of the version does not match its manifest.
    """
    store = ModelStore(model_dir)
    if version is not None or store.current() is not None:
        return Bundle.open(store.path(version), verify=verify, mmap=mmap, lazy=lazy)
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


def bundle_options(bundle: Bundle) -> BundleOptions:
    """The compression and precision ``bundle`` was written with."""
    written = bundle.manifest.get("bundle", {})
    return BundleOptions(
        Compression.parse(written.get("compression", "none")), bool(written.get("float32"))
    )


def save_derived(
    bundle: Bundle,
    store: ModelStore,
    *,
    options: BundleOptions | None = None,
    top_n: TopN | None = None,
    params: Mapping[str, dict[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
    promote: bool = True,
) -> str:
    """Write ``bundle``'s models again as a new version of ``store`` (re-encoded, re-tuned).

    The manifest keeps everything the source version recorded (config, data fingerprint,
    metrics...), gains ``derived_from``, and gets fresh file entries.

    Args:
        bundle: The source version (every part is loaded).
        store: Where the new version goes (the same store or another one).
        options: Compression and precision (default: the source's).
        top_n: Precomputed recommendations (default: the source's).
        params: New hyperparameters per model, for the manifest (after tuning).
        extra: More manifest fields.
        promote: Make the new version current.
    """
    models = bundle.models()
    manifest = bundle.manifest
    kept = {k: v for k, v in manifest.items() if k not in ("version", "created_at")}
    info = {
        name: {k: v for k, v in entry.items() if k in ("params", "fit_seconds")}
        for name, entry in manifest["models"].items()
    }
    for name, value in (params or {}).items():
        info[name] = {**info.get(name, {}), "params": value}
    options = options or bundle_options(bundle)
    top = top_n if top_n is not None else bundle.top_n

    def write(path: Path) -> dict[str, Any]:
        written = write_bundle(
            path, models, items=bundle.items, top_n=top, options=options, model_info=info
        )
        return {**kept, **written, "derived_from": bundle.version, **dict(extra or {})}

    return store.write_version(write, promote=promote)
