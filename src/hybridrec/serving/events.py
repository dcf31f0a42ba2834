"""The event store: interactions and feedback the service receives, in a SQL database.

SQLite in WAL mode (``<data dir>/events.db``) by default, PostgreSQL (psycopg 3) by URL.
The schema is versioned with Alembic (scripts in ``serving/migrations``) and brought up to
date on start. A write returns only after its transaction committed; any database failure
becomes `DatabaseUnavailableError`, which the API answers with 503 while recommendations go on.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from hybridrec.errors import ConfigError, HybridrecError

__all__ = [
    "ARM_MAX_LENGTH",
    "ID_MAX_LENGTH",
    "LABEL_MAX_LENGTH",
    "VERSION_TABLE",
    "DatabaseUnavailableError",
    "EventRow",
    "EventStore",
    "FeedbackRow",
    "StoredEvent",
    "database_url",
    "metadata",
    "migrate",
]

log = logging.getLogger(__name__)

#: Alembic's version table (named so it cannot clash with another application's).
VERSION_TABLE = "hybridrec_alembic_version"
_MIGRATIONS = Path(__file__).parent / "migrations"
# Serializes concurrent migrations of one PostgreSQL database (any constant works).
_PG_LOCK_KEY = 0x68796272
#: Rows per chunk when events are exported.
_EXPORT_CHUNK = 100_000

#: Longest user / item id (and model version) the store's columns hold, in characters; the
#: API validates ids against the same numbers, so no id reaches a column it does not fit.
ID_MAX_LENGTH = 128
#: Longest feedback ``source`` (a method name) the store holds.
LABEL_MAX_LENGTH = 64
#: Longest A/B arm name the store holds.
ARM_MAX_LENGTH = 8

metadata = sa.MetaData()
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

#: The tables as the latest migration leaves them (the migrations are the source of truth).
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("user_id", sa.String(ID_MAX_LENGTH), nullable=False),
    sa.Column("item_id", sa.String(ID_MAX_LENGTH), nullable=False),
    sa.Column("event_type", sa.String(32), nullable=False),
    sa.Column("weight", sa.Float(), nullable=False),
    sa.Column("ts", sa.Float(), nullable=False),
    sa.Column("received_at", sa.Float(), nullable=False),
    sa.Column("arm", sa.String(ARM_MAX_LENGTH), nullable=True),
    sa.Index("ix_events_user_id", "user_id"),
    sa.Index("ix_events_received_at", "received_at"),
)
feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("user_id", sa.String(ID_MAX_LENGTH), nullable=False),
    sa.Column("item_id", sa.String(ID_MAX_LENGTH), nullable=False),
    sa.Column("value", sa.String(8), nullable=False),
    sa.Column("source", sa.String(LABEL_MAX_LENGTH), nullable=True),
    sa.Column("model_version", sa.String(ID_MAX_LENGTH), nullable=True),
    sa.Column("ts", sa.Float(), nullable=False),
    sa.Column("received_at", sa.Float(), nullable=False),
    sa.Column("arm", sa.String(ARM_MAX_LENGTH), nullable=True),
    sa.Index("ix_feedback_user_id", "user_id"),
)
#: What an A/B test's users were shown: one row per item of a response (only while a test runs).
impressions = sa.Table(
    "impressions",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("user_id", sa.String(ID_MAX_LENGTH), nullable=False),
    sa.Column("item_id", sa.String(ID_MAX_LENGTH), nullable=False),
    sa.Column("arm", sa.String(ARM_MAX_LENGTH), nullable=False),
    sa.Column("model_version", sa.String(ID_MAX_LENGTH), nullable=True),
    sa.Column("rank", sa.Integer(), nullable=False),
    sa.Column("received_at", sa.Float(), nullable=False),
    sa.Index("ix_impressions_received_at", "received_at"),
)


class DatabaseUnavailableError(HybridrecError):
    """The event store cannot be reached or refused the write (nothing was stored)."""


@dataclass(frozen=True)
class EventRow:
    """An interaction to store.

    Attributes:
        user_id: External user id (text).
        item_id: External item id (text).
        event_type: ``view``, ``click``, ``add_to_cart``, ``purchase``, ``rating``, ``like``
            or ``dislike``.
        weight: Strength of the interaction (0 for ``dislike``).
        ts: When it happened, Unix seconds.
        received_at: When the service got it, Unix seconds.
        arm: The user's A/B arm when a test ran (filled by the server, not the client).
    """

    user_id: str
    item_id: str
    event_type: str
    weight: float
    ts: float
    received_at: float
    arm: str | None = None


@dataclass(frozen=True)
class StoredEvent(EventRow):
    """An `EventRow` with the id the database gave it."""

    id: int = 0


@dataclass(frozen=True)
class FeedbackRow:
    """A thumbs up / down on a recommended item, with the method that recommended it."""

    user_id: str
    item_id: str
    value: str
    source: str | None
    model_version: str | None
    ts: float
    received_at: float
    arm: str | None = None


def database_url(url: str | None, data_dir: Path) -> str:
    """The SQLAlchemy URL to use: ``url`` (``postgresql://`` means psycopg 3) or SQLite."""
    if not url:
        return f"sqlite:///{Path(data_dir).expanduser() / 'events.db'}"
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


#: Backends the migrations are written and tested for.
_BACKENDS = ("sqlite", "postgresql")
_EXAMPLES = "sqlite:///path/events.db or postgresql://user@host:5432/db"


def _make_engine(url: str) -> Engine:
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        # Not echoed: a malformed URL may still hold a password.
        raise ConfigError(f"cannot parse the database URL; expected e.g. {_EXAMPLES}") from None
    backend = parsed.get_backend_name()
    shown = parsed.render_as_string(hide_password=True)
    if backend not in _BACKENDS:
        raise ConfigError(
            f"unsupported database {shown!r}: the event store runs on "
            f"{' or '.join(_BACKENDS)} (e.g. {_EXAMPLES})"
        )
    try:
        return _create_engine(url, parsed)
    except (ImportError, sa.exc.NoSuchModuleError, sa.exc.ArgumentError) as exc:
        raise ConfigError(f"database {shown!r}: driver not available ({exc})") from None


def _create_engine(url: str, parsed: sa.URL) -> Engine:
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(
            url, connect_args={"timeout": 10, "check_same_thread": False}, pool_pre_ping=True
        )

        @sa_event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before the write is acknowledged.
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()

        return engine
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = 3
    return sa.create_engine(
        url, pool_pre_ping=True, pool_size=5, max_overflow=10, connect_args=connect_args
    )


def migrate(engine: Engine) -> str | None:
    """Bring the schema to the newest revision; returns it. Safe to run concurrently.

    Raises:
        DatabaseUnavailableError: The database cannot be reached or the migration failed.
    """
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    try:
        db = engine.url.database
        if engine.dialect.name == "sqlite" and db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        with _migration_lock(engine), engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            return ctx.get_current_revision()
    except (SQLAlchemyError, OSError) as exc:
        raise DatabaseUnavailableError(f"event store migration failed: {_short(exc)}") from None


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """A file lock beside a SQLite database (PostgreSQL uses an advisory lock instead)."""
    db = engine.url.database
    if engine.dialect.name != "sqlite" or not db or db == ":memory:":
        yield
        return
    with open(f"{db}.migrate-lock", "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class EventStore:
    """Reads and writes events and feedback; creates the schema on first use.

    Args:
        url: SQLAlchemy URL (see `database_url`).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _make_engine(url)
        self.revision: str | None = None
        self._schema_lock = threading.Lock()
        self._last_error: str | None = None

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql`` (or another SQLAlchemy backend)."""
        return self.engine.dialect.name

    @property
    def last_error(self) -> str | None:
        """The last failure, or None when the last operation worked."""
        return self._last_error

    def ensure_schema(self) -> None:
        """Migrate once per process (again after a failure).

        Raises:
            DatabaseUnavailableError: The database cannot be reached.
        """
        if self.revision is not None:
            return
        with self._schema_lock:
            if self.revision is None:
                try:
                    self.revision = migrate(self.engine) or "unknown"
                except DatabaseUnavailableError as exc:
                    self._last_error = str(exc)
                    raise
                self._last_error = None

    @contextlib.contextmanager
    def _connect(self, write: bool) -> Iterator[sa.Connection]:
        self.ensure_schema()
        try:
            with self.engine.begin() if write else self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as exc:
            self._last_error = _short(exc)
            raise DatabaseUnavailableError(f"event store unavailable: {self._last_error}") from None
        self._last_error = None

    def ping(self) -> bool:
        """Whether the database answers (and has the schema)."""
        try:
            with self._connect(write=False) as conn:
                conn.execute(sa.select(1))
        except DatabaseUnavailableError:
            return False
        return True

    def add_events(self, rows: Sequence[EventRow]) -> list[StoredEvent]:
        """Insert ``rows`` in one transaction; returns them with their ids once committed."""
        if not rows:
            return []
        params = [_row_dict(r) for r in rows]
        with self._connect(write=True) as conn:
            result = conn.execute(
                events.insert().returning(events.c.id, sort_by_parameter_order=True), params
            )
            ids = [int(i) for i in result.scalars().all()]
        return [StoredEvent(**p, id=i) for p, i in zip(params, ids, strict=True)]

    def add_feedback(self, row: FeedbackRow, event: EventRow) -> tuple[int, StoredEvent]:
        """Insert a feedback row and the interaction it implies, in one transaction."""
        with self._connect(write=True) as conn:
            fid = conn.execute(
                feedback.insert().returning(feedback.c.id), [_row_dict(row)]
            ).scalar_one()
            params = _row_dict(event)
            eid = conn.execute(events.insert().returning(events.c.id), [params]).scalar_one()
        return int(fid), StoredEvent(**params, id=int(eid))

    def add_impressions(
        self, user_id: str, arm: str, model_version: str | None, item_ids: Sequence[str]
    ) -> None:
        """Store what one response showed a user of an A/B test (one row per item)."""
        if not item_ids:
            return
        received = now()
        params = [
            {
                "user_id": user_id,
                "item_id": item,
                "arm": arm,
                "model_version": model_version,
                "rank": rank,
                "received_at": received,
            }
            for rank, item in enumerate(item_ids, start=1)
        ]
        with self._connect(write=True) as conn:
            conn.execute(impressions.insert(), params)

    def ab_rows(self, since: float, until: float | None = None) -> dict[str, list[tuple[Any, ...]]]:
        """The rows an A/B report counts: arm-tagged, received from ``since`` (to ``until``).

        Returns:
            ``impressions`` as ``(arm, user, item, received_at)``, ``feedback`` as
            ``(arm, value, received_at)``, and ``events`` (thumbs excluded: they are
            feedback) as ``(arm, user, item, received_at)``.
        """
        queries = {
            "impressions": sa.select(
                impressions.c.arm,
                impressions.c.user_id,
                impressions.c.item_id,
                impressions.c.received_at,
            ).where(impressions.c.received_at >= since),
            "feedback": sa.select(feedback.c.arm, feedback.c.value, feedback.c.received_at).where(
                feedback.c.received_at >= since, feedback.c.arm.is_not(None)
            ),
            "events": sa.select(
                events.c.arm, events.c.user_id, events.c.item_id, events.c.received_at
            ).where(
                events.c.received_at >= since,
                events.c.arm.is_not(None),
                events.c.event_type.not_in(["like", "dislike"]),
            ),
        }
        if until is not None:
            queries = {
                name: q.where(table.c.received_at <= until)
                for (name, q), table in zip(
                    queries.items(), (impressions, feedback, events), strict=True
                )
            }
        with self._connect(write=False) as conn:
            return {name: [tuple(r) for r in conn.execute(q)] for name, q in queries.items()}

    def max_event_id(self) -> int:
        """The highest event id (0 when there are none)."""
        with self._connect(write=False) as conn:
            return int(conn.execute(sa.select(sa.func.max(events.c.id))).scalar() or 0)

    def events_after(
        self,
        after_id: int,
        *,
        also_ids: Sequence[int] = (),
        upto_id: int | None = None,
        received_since: float | None = None,
        limit: int = 10_000,
    ) -> list[StoredEvent]:
        """Events with id above ``after_id`` (and those in ``also_ids``), oldest first."""
        cond: Any = events.c.id > after_id
        if upto_id is not None:
            cond = sa.and_(cond, events.c.id <= upto_id)
        if received_since is not None:
            cond = sa.and_(cond, events.c.received_at >= received_since)
        if also_ids:
            cond = sa.or_(cond, events.c.id.in_(list(also_ids)))
        query = sa.select(events).where(cond).order_by(events.c.id).limit(limit)
        with self._connect(write=False) as conn:
            return [_stored(r) for r in conn.execute(query).mappings()]

    def count(self, table: str = "events") -> int:
        """Rows in ``events`` or ``feedback``."""
        t = events if table == "events" else feedback
        with self._connect(write=False) as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() or 0)

    def export(
        self, path: Path, *, since: float | None = None, include_dislikes: bool = False
    ) -> int:
        """Write events as Parquet for training; returns the row count.

        Columns ``user_id, item_id, weight, timestamp, event_type``; ids are integers when
        every id is one.
        """
        query = sa.select(
            events.c.user_id,
            events.c.item_id,
            events.c.weight,
            events.c.ts,
            events.c.event_type,
        ).order_by(events.c.id)
        if since is not None:
            query = query.where(events.c.ts >= since)
        if not include_dislikes:
            query = query.where(events.c.event_type != "dislike")
        schema = {
            "user_id": pl.String,
            "item_id": pl.String,
            "weight": pl.Float64,
            "ts": pl.Float64,
            "event_type": pl.String,
        }
        # Columnar chunks, not one Python tuple per event: a long-running service's log
        # is millions of rows.
        with self._connect(write=False) as conn:
            chunks = [
                pl.DataFrame(part, schema=schema, orient="row")
                for part in conn.execute(query.execution_options(stream_results=True)).partitions(
                    _EXPORT_CHUNK
                )
            ]
        df = pl.concat(chunks) if chunks else pl.DataFrame(schema=schema)
        df = df.select(
            _as_int_if_all(df["user_id"]),
            _as_int_if_all(df["item_id"]),
            "weight",
            pl.col("ts").floor().cast(pl.Int64).alias("timestamp"),
            "event_type",
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        df.write_parquet(tmp)
        tmp.replace(path)
        return df.height

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()


def _as_int_if_all(col: pl.Series) -> pl.Series:
    parsed = col.str.strip_chars().cast(pl.Int64, strict=False)
    if col.len() and parsed.null_count() == 0:
        return parsed.alias(col.name)
    return col


def _row_dict(row: EventRow | FeedbackRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in row.__dataclass_fields__ if name != "id"}


def _stored(r: Any) -> StoredEvent:
    return StoredEvent(
        user_id=r["user_id"],
        item_id=r["item_id"],
        event_type=r["event_type"],
        weight=float(r["weight"]),
        ts=float(r["ts"]),
        received_at=float(r["received_at"]),
        arm=r.get("arm"),
        id=int(r["id"]),
    )


def now() -> float:
    """Unix seconds (one clock for the whole service)."""
    return time.time()
