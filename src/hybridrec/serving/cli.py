"""``hybridrec serve`` and ``hybridrec events export``.

`register` adds both to the main ``hybridrec`` command; ``python -m hybridrec.serving``
runs them on their own. FastAPI, uvicorn and SQLAlchemy are imported only when a command
runs, so the rest of the CLI works without the ``serve`` extra.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from hybridrec.errors import ConfigError, HybridrecError

__all__ = ["events_app", "events_export_command", "main", "register", "serve_command"]

F = TypeVar("F", bound=Callable[..., Any])


def _friendly(fn: F) -> F:
    """A `HybridrecError` becomes one ``error: ...`` line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (HybridrecError, OSError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


ModelDirOpt = Annotated[
    Path, typer.Option("--model-dir", help="Model store directory.", envvar="HYBRIDREC_MODEL_DIR")
]
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="Event store URL (postgresql://user@host/db); default: SQLite in the data dir.",
        envvar="HYBRIDREC_DATABASE_URL",
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Where the SQLite event store lives.", envvar="HYBRIDREC_DATA_DIR"
    ),
]


def serve_command(  # noqa: PLR0917 - typer options
    model_dir: ModelDirOpt = Path("models"),
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on.", envvar="HYBRIDREC_HOST")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", help="Port to listen on.", envvar="HYBRIDREC_PORT")
    ] = 8000,
    workers: Annotated[
        int, typer.Option("--workers", help="Server processes.", envvar="HYBRIDREC_WORKERS")
    ] = 1,
    version: Annotated[
        str | None, typer.Option("--version", help="Serve this version (default: current).")
    ] = None,
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request.")
    ] = False,
    retrain_every: Annotated[
        str | None,
        typer.Option(
            "--retrain-every",
            help="Retrain every DURATION (30m, 6h, 1d) in a process beside the server, "
            "deploying a candidate only when better (hybridrec retrain). Default: "
            "HYBRIDREC_RETRAIN_EVERY; unset: never.",
        ),
    ] = None,
) -> None:
    """Serve recommendations over HTTP (OpenAPI docs at /docs)."""
    _friendly(_serve)(
        model_dir,
        host,
        port,
        workers,
        version,
        database_url,
        data_dir,
        log_level,
        access_log,
        retrain_every,
    )


def _serve(  # noqa: PLR0917 - the options of serve_command
    model_dir: Path,
    host: str,
    port: int,
    workers: int,
    version: str | None,
    database_url: str | None,
    data_dir: Path | None,
    log_level: str,
    access_log: bool,
    retrain_every: str | None = None,
) -> None:
    import uvicorn

    from hybridrec.bundle import ModelStore
    from hybridrec.config import Settings
    from hybridrec.serving.events import DatabaseUnavailableError, EventStore
    from hybridrec.serving.events import database_url as resolve_url

    if workers < 1:
        raise ConfigError(f"--workers must be at least 1 (got {workers})")
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0-65535 (got {port})")
    if not model_dir.is_dir():
        raise ConfigError(
            f"{model_dir}: no model directory (run 'hybridrec train --model-dir {model_dir}')"
        )
    if ModelStore(model_dir).current() is None and version is None:
        typer.echo(
            f"warning: {model_dir} has no current version yet; /health/ready answers 503 "
            "until one is promoted",
            err=True,
        )
    # Worker processes read their settings from the environment.
    env = {
        "HYBRIDREC_MODEL_DIR": str(model_dir.resolve()),
        "HYBRIDREC_MODEL_VERSION": version,
        "HYBRIDREC_DATABASE_URL": database_url,
        "HYBRIDREC_DATA_DIR": None if data_dir is None else str(data_dir.resolve()),
    }
    previous = {key: os.environ.get(key) for key in env}
    for key, value in env.items():
        if value is not None:
            os.environ[key] = value
        elif key == "HYBRIDREC_MODEL_VERSION":
            os.environ.pop(key, None)
    try:
        settings = Settings()
        retrain_every = retrain_every if retrain_every is not None else settings.retrain_every
        if retrain_every:
            _check_retraining(retrain_every, version, settings.sync_seconds)
        store = EventStore(resolve_url(settings.database_url, settings.data_dir))
    except BaseException:
        # A refused start leaves the calling process's environment as it was (the CLI run
        # in-process, as tests and embedding programs do, goes on with it).
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        raise
    try:
        store.ensure_schema()
    except DatabaseUnavailableError as exc:
        typer.echo(f"warning: {exc}; events answer 503 until it is reachable", err=True)
    finally:
        store.dispose()
    prom_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        prom_dir = _metrics_dir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = prom_dir
    retrainer = _start_retraining(model_dir, retrain_every) if retrain_every else None
    try:
        uvicorn.run(
            "hybridrec.serving.app:create_app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            access_log=access_log,
            timeout_graceful_shutdown=10,
        )
    finally:
        if retrainer is not None:
            _stop_retraining(retrainer)
        if prom_dir is not None:
            shutil.rmtree(prom_dir, ignore_errors=True)


#: Prefix of the Prometheus multiprocess directories of ``serve --workers N`` (then the pid).
_METRICS_PREFIX = "hybridrec-metrics-"


def _metrics_dir() -> str:
    """A fresh Prometheus multiprocess directory, named after this process.

    Those of servers that are gone go first: a server stopped cleanly (Ctrl-C, SIGTERM)
    removes its own, but one killed (SIGKILL, the OOM killer) cannot, and the next start
    removes what it left.
    """
    from hybridrec.bundle.store import pid_alive

    for old in Path(tempfile.gettempdir()).glob(f"{_METRICS_PREFIX}*-*"):
        pid = old.name[len(_METRICS_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{_METRICS_PREFIX}{os.getpid()}-")


def _check_retraining(every: str, version: str | None, sync_seconds: float) -> None:
    """Refuse ``--retrain-every`` where a deployment could never be served."""
    from hybridrec.pipeline.retrain import parse_duration

    parse_duration(every, what="--retrain-every")
    if version is not None:
        raise ConfigError(
            "--retrain-every: a server pinned with --version never serves a retrained "
            "version; leave one of them out"
        )
    if sync_seconds <= 0:
        raise ConfigError(
            "--retrain-every needs HYBRIDREC_SYNC_SECONDS > 0: the server picks a deployed "
            "version up by following the store's current pointer"
        )


def _start_retraining(model_dir: Path, every: str) -> subprocess.Popen[bytes]:
    """``hybridrec retrain --every`` in a process of its own beside this server.

    A process, not a thread: training holds the GIL for long stretches, and requests must
    not wait for it. It runs at a lower priority, in a session of its own (a Ctrl-C goes to
    the server only), and ends as soon as this process is gone, however it went
    (`hybridrec.pipeline.retrain.exit_with_parent`: uvicorn ends a process that got a
    signal by raising it again, past any ``finally``). It inherits the environment, so it
    reads the same event store; a deployment moves the store's ``current`` pointer, which
    every worker follows (``HYBRIDREC_SYNC_SECONDS``).
    """
    code = (
        "import sys; from hybridrec.cli import app; app(prog_name='hybridrec', args=sys.argv[1:])"
    )
    args = ["retrain", "--every", every, "--model-dir", str(model_dir.resolve())]
    args += ["--beside-server", str(os.getpid())]
    typer.echo(f"retraining every {every} beside the server (hybridrec retrain)", err=True)
    return subprocess.Popen([sys.executable, "-c", code, *args], start_new_session=True)


def _stop_retraining(proc: subprocess.Popen[bytes]) -> None:
    """Stop the retraining process (a round in flight is safe to cut: nothing is promoted)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


events_app = typer.Typer(
    help="The service's event store: export events for training.", no_args_is_help=True
)


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"--since {value!r}: give Unix seconds or an ISO 8601 date / time"
        ) from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.timestamp()


@events_app.command("export")
def events_export_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Parquet file to write.")],
    database_url: DatabaseOpt = None,
    data_dir: DataDirOpt = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only events that happened from then (ISO or Unix s)."),
    ] = None,
    include_dislikes: Annotated[
        bool, typer.Option("--include-dislikes", help="Also export dislikes (weight 0).")
    ] = False,
) -> None:
    """Write stored events as Parquet: user_id, item_id, weight, timestamp, event_type.

    Train on it with ``[data] source = "files"`` and ``implicit = "keep"`` (event weights
    are not ratings).
    """
    _friendly(_export)(output, database_url, data_dir, since, include_dislikes)


def _export(
    output: Path,
    database_url: str | None,
    data_dir: Path | None,
    since: str | None,
    include_dislikes: bool,
) -> None:
    from hybridrec.config import Settings
    from hybridrec.serving.events import EventStore
    from hybridrec.serving.events import database_url as resolve_url

    if output.suffix.lower() not in (".parquet", ".pq"):
        raise ConfigError(f"{output}: the export is Parquet; name it *.parquet")
    settings = Settings()
    url = resolve_url(database_url or settings.database_url, data_dir or settings.data_dir)
    store = EventStore(url)
    try:
        n = store.export(output, since=_since(since), include_dislikes=include_dislikes)
    finally:
        store.dispose()
    typer.echo(f"wrote {n} events to {output}", err=True)


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``events`` to the main ``hybridrec`` command."""
    app.command("serve")(serve_command)
    app.add_typer(events_app, name="events")


def main() -> None:  # pragma: no cover - console entry point
    """``python -m hybridrec.serving``: the two commands on their own."""
    app = typer.Typer(
        help="hybridrec serving commands.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    register(app)
    app(prog_name="hybridrec", args=sys.argv[1:])
