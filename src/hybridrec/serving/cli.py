"""``hybridrec serve`` and ``hybridrec events export``.

`register` adds both to the main ``hybridrec`` command; ``python -m hybridrec.serving``
runs them on their own. FastAPI, uvicorn and SQLAlchemy are imported only when a command
runs, so the rest of the CLI works without the ``serve`` extra.
"""

from __future__ import annotations

import functools
import os
import shutil
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
) -> None:
    """Serve recommendations over HTTP (OpenAPI docs at /docs)."""
    _friendly(_serve)(
        model_dir, host, port, workers, version, database_url, data_dir, log_level, access_log
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
    for key, value in env.items():
        if value is not None:
            os.environ[key] = value
        elif key == "HYBRIDREC_MODEL_VERSION":
            os.environ.pop(key, None)
    settings = Settings()
    store = EventStore(resolve_url(settings.database_url, settings.data_dir))
    try:
        store.ensure_schema()
    except DatabaseUnavailableError as exc:
        typer.echo(f"warning: {exc}; events answer 503 until it is reachable", err=True)
    finally:
        store.dispose()
    prom_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        prom_dir = tempfile.mkdtemp(prefix="hybridrec-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = prom_dir
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
        if prom_dir is not None:
            shutil.rmtree(prom_dir, ignore_errors=True)


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
