"""The model store mirrored in MLflow's model registry.

Every version of the store is a version of one registered model (``[tracking]
registered_model``), tagged with the bundle version, the store it lives in and the default
model's metrics, and linked to the run that trained it when there is one. The store's
``current`` is the alias ``champion``; a version trained without being promoted is the alias
``challenger``. The store stays the source of truth: a sync makes the registry agree with
it, registering the versions it missed while it was unreachable.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybridrec.bundle.store import ModelStore
from hybridrec.tracking.record import flatten, metric_key

if TYPE_CHECKING:
    from hybridrec.tracking.client import Tracker

__all__ = ["CHALLENGER", "CHAMPION", "registered_versions", "sync_registry"]

CHAMPION = "champion"
CHALLENGER = "challenger"
#: The data fingerprint fields a registered version carries as tags.
_DATA_TAGS = ("source", "rows", "users", "items", "hash")


def registered_versions(client: Any, name: str, store_root: str) -> dict[str, str]:
    """Bundle version → registry version number, for the versions of one store."""
    found: dict[str, str] = {}
    token = None
    while True:
        page = client.search_model_versions(f"name = '{name}'", max_results=1000, page_token=token)
        for mv in page:
            tags = mv.tags or {}
            if tags.get("store") == store_root and "bundle_version" in tags:
                found[tags["bundle_version"]] = str(mv.version)
        token = getattr(page, "token", None)
        if not token:
            return found


def _ensure_model(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(
                name, description="hybridrec model store versions (hybridrec.tracking)"
            )
        except MlflowException:
            client.get_registered_model(name)  # created meanwhile, else the error stands


def _run_of(tracker: Tracker, version: str) -> str | None:
    """The run that trained ``version``, when it was tracked."""
    runs = tracker.client.search_runs(
        [tracker.experiment_id],
        filter_string=f"tags.bundle_version = '{version}' and tags.`hybridrec.kind` = 'train'",
        max_results=1,
    )
    return str(runs[0].info.run_id) if runs else None


def _register(
    tracker: Tracker, store: ModelStore, version: str, run_id: str | None, root: str
) -> str:
    manifest = store.manifest(version)
    default = str(manifest.get("default_model", ""))
    data = manifest.get("data") or {}
    metrics = (manifest.get("metrics") or {}).get(default) or {}
    scores = {
        metric_key(key): f"{value:.6g}"
        for key, value in metrics.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    tags = {
        "bundle_version": version,
        "store": root,
        "default_model": default,
        "created_at": str(manifest.get("created_at", "")),
        **flatten({k: v for k, v in data.items() if k in _DATA_TAGS}, "data"),
        **scores,
    }
    models = ", ".join(manifest.get("models") or {})
    mv = tracker.client.create_model_version(
        tracker.config.registered_model,
        source=store.path(version).resolve().as_uri(),
        run_id=run_id,
        tags=tags,
        description=f"hybridrec bundle {version}: {models} (default {default})",
    )
    return str(mv.version)


def sync_registry(
    tracker: Tracker,
    store_root: Path,
    *,
    new: str | None = None,
    run_id: str | None = None,
    promoted: bool = True,
) -> None:
    """Register the store's unregistered versions; point ``champion`` at ``current``.

    Versions the store no longer holds (pruned, by ``bundle prune`` or a training run's
    retention) are deleted from the registry too; their runs keep their metrics.

    Args:
        tracker: The open store.
        store_root: The model store directory.
        new: The version the run just stored (linked to ``run_id``; the ``challenger``
            when it was not ``promoted``).
        run_id: The run that stored ``new``.
        promoted: Whether ``new`` was made current.
    """
    name = tracker.config.registered_model
    if not name:
        return
    client = tracker.client
    store = ModelStore(store_root)
    root = str(store.root.resolve())
    _ensure_model(client, name)
    known = registered_versions(client, name, root)
    present = set(store.versions())
    gone = sorted(v for v in known if v not in present)
    for version in gone:
        client.delete_model_version(name, known.pop(version))
    if gone:
        tracker.notes.append(
            f"MLflow registry: {len(gone)} pruned version(s) deleted from {name}: "
            + ", ".join(gone)
        )
    for version in store.versions():
        if version not in known:
            run = run_id if version == new else _run_of(tracker, version)
            known[version] = _register(tracker, store, version, run, root)
    current = store.current()
    if current is not None and current in known:
        client.set_registered_model_alias(name, CHAMPION, known[current])
        tracker.notes.append(
            f"MLflow registry: {name} version {known[current]} (bundle {current}) is {CHAMPION}"
        )
    if new is not None and not promoted and new in known:
        client.set_registered_model_alias(name, CHALLENGER, known[new])
        tracker.notes.append(
            f"MLflow registry: {name} version {known[new]} (bundle {new}) is {CHALLENGER}"
        )
