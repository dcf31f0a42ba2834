"""Opening the MLflow store and writing collected runs into it, never failing the caller.

mlflow is imported here, inside functions, only when a run is written: importing
``hybridrec.cli`` or ``hybridrec.bundle`` does not import it. Every call into MLflow goes
through `Tracker.attempt`: the first failure prints one warning line and turns tracking off
for the rest of the command (the model store, the source of truth for serving, is written
before and whatever happens here).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from rich.markup import escape

from hybridrec.config import Settings, TrackingConfig

if TYPE_CHECKING:
    from rich.console import Console

    from hybridrec.tracking.record import RunRecord

__all__ = [
    "Tracker",
    "default_uri",
    "flush",
    "open_tracker",
    "resolve_uri",
    "sync_store",
    "tracking_enabled",
]

T = TypeVar("T")

#: Loggers that would print MLflow's retries, migrations and tracebacks around our one line.
_QUIET = ("mlflow", "alembic", "urllib3", "sqlalchemy", "huey")
#: Lines said once per process (tracking off for want of mlflow).
_SAID: set[str] = set()
#: Params, metrics per MLflow ``log_batch`` call (its limits: 100 params, 1000 entities).
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 900


def tracking_enabled(config: TrackingConfig) -> bool:
    """``[tracking] enabled`` and not turned off for the process (``HYBRIDREC_TRACKING``)."""
    return config.enabled and Settings().tracking


def _data_dir() -> Path:
    return Settings().data_dir.expanduser() / "mlflow"


def default_uri() -> str:
    """The local store: SQLite ``mlflow/mlflow.db`` in the data directory."""
    return f"sqlite:///{(_data_dir() / 'mlflow.db').resolve()}"


def resolve_uri(config: TrackingConfig) -> str:
    """``MLFLOW_TRACKING_URI``, else ``[tracking] uri``, else `default_uri`.

    ``postgresql://`` is taken as psycopg 3 (as the event store does) when psycopg2, which
    SQLAlchemy would otherwise pick, is not installed.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or config.uri or default_uri()
    if uri.startswith("postgresql://") and importlib.util.find_spec("psycopg2") is None:
        uri = "postgresql+psycopg://" + uri[len("postgresql://") :]
    return uri


def _is_database(uri: str) -> bool:
    scheme = urlsplit(uri).scheme.split("+")[0]
    return scheme in ("sqlite", "postgresql", "mysql", "mssql")


def _shown(uri: str) -> str:
    """``uri`` without its password."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _summary(exc: BaseException) -> str:
    """The first line of an error, short enough for one warning line."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."


def _say(console: Console | None, text: str, *, once: bool = False) -> None:
    if once:
        if text in _SAID:
            return
        _SAID.add(text)
    if console is not None:
        console.print(escape(text), style="yellow", highlight=False, soft_wrap=True)


@contextmanager
def _quiet() -> Iterator[None]:
    """MLflow's own logging and warnings held back: the caller prints what matters."""
    levels = {name: logging.getLogger(name).level for name in _QUIET}
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@dataclass
class Tracker:
    """An open MLflow store (client, experiment) that stops at its first failure.

    Attributes:
        client: The ``mlflow.MlflowClient``.
        experiment_id: The experiment runs are created in.
        uri: The tracking URI (for messages).
        config: The ``[tracking]`` settings.
        console: Where the warning goes.
        ok: False once a call failed; later calls do nothing.
    """

    client: Any
    experiment_id: str
    uri: str
    config: TrackingConfig
    console: Console | None = None
    ok: bool = True
    notes: list[str] = field(default_factory=list)

    def attempt(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """``fn(*args, **kwargs)``; None, after one warning line, once a call has failed."""
        if not self.ok:
            return None
        try:
            with _quiet():
                return fn(*args, **kwargs)
        except Exception as exc:
            self.ok = False
            _say(
                self.console,
                f"warning: MLflow tracking off for this run: {what} at {_shown(self.uri)} "
                f"failed ({_summary(exc)}); the model store is unaffected, the registry "
                "catches up on the next tracked run",
            )
            return None


def open_tracker(config: TrackingConfig, console: Console | None = None) -> Tracker | None:
    """Open the store and the experiment; None (after one line saying why) when impossible."""
    try:
        with _quiet():
            import mlflow  # noqa: F401 - only whether it imports
    except ImportError:
        _say(
            console,
            "MLflow tracking is off: mlflow is not installed (pip install 'hybridrec[track]')",
            once=True,
        )
        return None
    uri = resolve_uri(config)
    # One quick retry and a bounded wait: a server that is down must not hold a run up.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    probe = Tracker(None, "", uri, config, console)
    client = probe.attempt("opening the store", _open_client, uri)
    if client is None:
        return None
    probe.client = client
    experiment = probe.attempt("opening the experiment", _experiment, client, uri, config)
    if experiment is None:
        return None
    probe.experiment_id = experiment
    return probe


def _open_client(uri: str) -> Any:
    if _is_database(uri):
        # MLflow retries an unreachable database for about 100 s; one try with a timeout.
        import sqlalchemy

        if uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        timeout = {} if uri.startswith("sqlite") else {"connect_args": {"connect_timeout": 5}}
        engine = sqlalchemy.create_engine(uri, **timeout)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    from mlflow import MlflowClient

    registry = os.environ.get("MLFLOW_REGISTRY_URI") or uri
    return MlflowClient(tracking_uri=uri, registry_uri=registry)


def _experiment(client: Any, uri: str, config: TrackingConfig) -> str:
    """The id of ``config.experiment``, created (with its artifact location) if missing."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(config.experiment)
    if found is not None:
        return str(found.experiment_id)
    location = config.artifacts
    if location is None and _is_database(uri):
        location = (_data_dir() / "artifacts").resolve().as_uri()
    try:
        return str(client.create_experiment(config.experiment, artifact_location=location))
    except MlflowException:
        # Another process created it meanwhile.
        found = client.get_experiment_by_name(config.experiment)
        if found is None:
            raise
        return str(found.experiment_id)


def _ms(seconds: float | None) -> int:
    return int((seconds if seconds is not None else time.time()) * 1000)


def _log(client: Any, run_id: str, params: dict[str, str], metrics: dict[str, float]) -> None:
    """Params and metrics in as few ``log_batch`` calls as MLflow's limits allow."""
    from mlflow.entities import Metric, Param

    now = _ms(None)
    p_items, m_items = list(params.items()), list(metrics.items())
    calls = max(
        math.ceil(len(p_items) / _PARAMS_PER_BATCH), math.ceil(len(m_items) / _METRICS_PER_BATCH)
    )
    for i in range(calls):
        p_chunk = p_items[i * _PARAMS_PER_BATCH : (i + 1) * _PARAMS_PER_BATCH]
        m_chunk = m_items[i * _METRICS_PER_BATCH : (i + 1) * _METRICS_PER_BATCH]
        client.log_batch(
            run_id,
            params=[Param(k, v) for k, v in p_chunk],
            metrics=[Metric(k, v, now, 0) for k, v in m_chunk],
        )


def write_run(tracker: Tracker, record: RunRecord) -> str:
    """Create the run of ``record`` with everything it collected; returns its id."""
    from hybridrec import __version__
    from hybridrec.tracking.record import flatten

    client = tracker.client
    name = f"{record.kind} {record.versions[-1][1]}" if record.versions else record.kind
    tags = {
        "hybridrec.kind": record.kind,
        "hybridrec.version": __version__,
        "mlflow.source.name": f"hybridrec {record.kind}",
        "mlflow.source.type": "LOCAL",
        **record.tags,
    }
    run = client.create_run(
        tracker.experiment_id, start_time=_ms(record.start), tags=tags, run_name=name
    )
    run_id = str(run.info.run_id)
    _log(client, run_id, record.params, record.metrics)
    for path, folder in record.artifacts:
        client.log_artifact(run_id, str(path), folder)
    if record.texts:
        with tempfile.TemporaryDirectory(prefix="hybridrec-mlflow-") as tmp:
            for file, text in record.texts.items():
                (Path(tmp) / file).write_text(text, encoding="utf-8")
                client.log_artifact(run_id, str(Path(tmp) / file))
    for trial in record.trials:
        child = client.create_run(
            tracker.experiment_id,
            start_time=_ms(trial.start or record.start),
            run_name=f"{trial.model} trial {trial.number}",
            tags={
                "mlflow.parentRunId": run_id,
                "hybridrec.kind": "trial",
                "hybridrec.model": trial.model,
                "hybridrec.trial": str(trial.number),
            },
        )
        child_id = str(child.info.run_id)
        _log(client, child_id, flatten(trial.params), trial.metrics())
        client.set_terminated(child_id, "FINISHED", end_time=_ms(trial.end or record.end))
    client.set_terminated(run_id, record.status, end_time=_ms(record.end))
    return run_id


def flush(record: RunRecord, console: Console | None = None) -> None:
    """Write ``record`` and register the versions it stored; never raises."""
    from hybridrec.tracking.registry import sync_registry

    if record.config is None:
        return
    tracker = open_tracker(record.config, console)
    if tracker is None:
        return
    run_id = tracker.attempt("logging the run", write_run, tracker, record)
    for root, version, promoted in record.versions:
        tracker.attempt(
            "registering the version",
            sync_registry,
            tracker,
            root,
            new=version,
            run_id=run_id,
            promoted=promoted,
        )
    if tracker.ok and run_id is not None:
        nested = f" with {len(record.trials)} nested trials" if record.trials else ""
        _say_done(console, f"MLflow: {record.kind} run {run_id}{nested} in {_shown(tracker.uri)}")
        for note in tracker.notes:
            _say_done(console, note)


def _say_done(console: Console | None, text: str) -> None:
    if console is not None:
        console.print(escape(text), style="dim", highlight=False, soft_wrap=True)


def sync_store(model_dir: Path, console: Console | None = None) -> None:
    """Mirror a store's ``current`` in the registry (after a promote or a rollback).

    The ``[tracking]`` settings are those the current version was trained with; the
    registry catches up on versions it missed (registered then). Never raises.
    """
    from hybridrec.bundle.store import ModelStore
    from hybridrec.tracking.registry import sync_registry

    store = ModelStore(model_dir)
    try:
        raw = (store.manifest().get("config") or {}).get("tracking") or {}
        config = TrackingConfig.model_validate(raw)
    except Exception:
        config = TrackingConfig()
    if not tracking_enabled(config) or not config.registered_model:
        return
    tracker = open_tracker(config, console)
    if tracker is None:
        return
    tracker.attempt("updating the registry", sync_registry, tracker, store.root)
    for note in tracker.notes:
        _say_done(console, note)
