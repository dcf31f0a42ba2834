"""MLflow experiment tracking and model registry for train, evaluate and tune runs.

A command collects its run while it works (`tracked_run`: the resolved config as params,
every metric at every K overall and by segment, the data fingerprint, code and bundle
versions as tags, the manifest and plots as artifacts, each search trial a nested run) and
writes it when it ends; each stored version becomes a registered model version and the
store's ``current`` the alias ``champion`` (`sync_registry`, `sync_store`). mlflow is
imported only then: importing this package does not import it. Tracking never fails a
command: without mlflow it says so once, and an unreachable store costs one warning line.
"""

from hybridrec.tracking.client import (
    default_uri,
    flush,
    open_tracker,
    resolve_uri,
    sync_store,
    tracking_enabled,
)
from hybridrec.tracking.record import RunRecord, active, record_trials, tracked_run
from hybridrec.tracking.registry import CHALLENGER, CHAMPION, sync_registry

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "RunRecord",
    "active",
    "default_uri",
    "flush",
    "open_tracker",
    "record_trials",
    "resolve_uri",
    "sync_registry",
    "sync_store",
    "tracked_run",
    "tracking_enabled",
]
