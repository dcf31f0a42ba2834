"""Fixtures of the serving tests: a trained store, real servers, a PostgreSQL schema per run.

Servers are real ``python -m hybridrec.serving serve`` processes on a free loopback port
(the same code path as ``hybridrec serve``); PostgreSQL is the server on 127.0.0.1:5432,
database ``test``, where every test run works in a schema of its own, dropped at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from cli_helpers import (
    FILES_PIPELINE,
    assert_ok,
    free_port,
    invoke,
    synthetic_ratings,
    write_table,
)

PG_HOST, PG_PORT, PG_DB = "127.0.0.1", 5432, "test"
ADMIN_TOKEN = "s3cret-token"
GENRES = ("rock", "jazz", "folk")

SERVING_CONFIG = (
    FILES_PIPELINE
    + """

[models.als]
factors = 16
iterations = 8
random_state = 1

[models.itemknn]
neighbors = 20

[models.content]
"""
)


def _catalog() -> pl.DataFrame:
    ids = list(range(1000, 1090))
    return pl.DataFrame(
        {
            "item_id": ids,
            "title": [f"{GENRES[(i - 1000) % 3]} album {i}" for i in ids],
            "categories": [GENRES[(i - 1000) % 3].capitalize() for i in ids],
        }
    )


@pytest.fixture(scope="session")
def serving_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic ratings (cold, warm and hot users) and a catalog with three genres."""
    root = tmp_path_factory.mktemp("serving-data")
    train, _ = synthetic_ratings()
    write_table(train, root / "train.csv")
    _catalog().write_csv(root / "items.csv")
    (root / "serving.toml").write_text(SERVING_CONFIG, encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def serving_store(serving_data: Path) -> Path:
    """A store with two versions (popularity, ALS, item-kNN, content); the second current."""
    model_dir = serving_data / "models"
    for _ in range(2):
        assert_ok(
            invoke(
                "train",
                "--config",
                serving_data / "serving.toml",
                "--model-dir",
                model_dir,
                "--no-evaluate",
            )
        )
    return model_dir


#: `SERVING_CONFIG` plus a hybrid, a ranker and a router, so every strategy has its own
#: first model (two_tower has its own tests; its strategy falls back here).
ROUTED_MODELS = """
[models.hybrid]
components = { als = 0.5, itemknn = 0.3, content = 0.2 }

[models.ranked]
model = "ranker"
retrievers = { als = 30, itemknn = 30, content = 30, two_tower = 30, popularity = 30 }
snapshots = 1
min_child_samples = 20
show_progress = false

[models.router]
cold_below = 5
hot_from = 20
cold = "content"
warm = "als"
hot = "hybrid"
"""


@pytest.fixture(scope="session")
def routed_store(serving_data: Path) -> Path:
    """A store over `serving_data` whose version also holds a hybrid and a router."""
    config = serving_data / "routed.toml"
    config.write_text(SERVING_CONFIG + ROUTED_MODELS, encoding="utf-8")
    model_dir = serving_data / "routed-models"
    assert_ok(invoke("train", "--config", config, "--model-dir", model_dir, "--no-evaluate"))
    return model_dir


def copy_store(store: Path, dest: Path) -> Path:
    """A private copy of a store (tests that promote or corrupt versions use one)."""
    shutil.copytree(store, dest)
    return dest


# ---- PostgreSQL ------------------------------------------------------------------------------


def _pg_user() -> str:
    import psycopg

    errors = []
    for user in ("postgres", "root"):
        try:
            with psycopg.connect(
                host=PG_HOST, port=PG_PORT, dbname=PG_DB, user=user, connect_timeout=3
            ):
                return user
        except psycopg.Error as exc:
            errors.append(f"{user}: {exc}")
    raise AssertionError(
        f"PostgreSQL at {PG_HOST}:{PG_PORT}/{PG_DB} refused users postgres and root: {errors}"
    )


@pytest.fixture(scope="session")
def pg_user() -> str:
    return _pg_user()


@dataclass
class PgSchemas:
    """Creates schemas with a unique prefix in the shared ``test`` database; drops them."""

    user: str
    prefix: str = field(default_factory=lambda: f"hrtest_{uuid.uuid4().hex[:10]}")
    made: list[str] = field(default_factory=list)

    def new(self, name: str) -> str:
        """A fresh schema; returns a SQLAlchemy URL whose search_path is that schema."""
        import psycopg

        schema = f"{self.prefix}_{name}"
        with psycopg.connect(
            host=PG_HOST, port=PG_PORT, dbname=PG_DB, user=self.user, autocommit=True
        ) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        self.made.append(schema)
        return (
            f"postgresql+psycopg://{self.user}@{PG_HOST}:{PG_PORT}/{PG_DB}"
            f"?options=-csearch_path%3D{schema}"
        )

    def drop_all(self) -> None:
        import psycopg

        with psycopg.connect(
            host=PG_HOST, port=PG_PORT, dbname=PG_DB, user=self.user, autocommit=True
        ) as conn:
            for schema in self.made:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(scope="session")
def pg_schemas(pg_user: str) -> Iterator[PgSchemas]:
    schemas = PgSchemas(pg_user)
    try:
        yield schemas
    finally:
        schemas.drop_all()


# ---- servers ---------------------------------------------------------------------------------


@dataclass
class Server:
    """A running ``hybridrec serve`` process."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    model_dir: Path
    token: str | None

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)  # type: ignore[arg-type]

    def admin(self) -> httpx.Client:
        return self.client(headers={"Authorization": f"Bearer {self.token}"})

    def logs(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(
    model_dir: Path,
    data_dir: Path,
    *,
    database_url: str | None = None,
    admin_token: str | None = ADMIN_TOKEN,
    wait_ready: bool = True,
    extra_env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> Server:
    """Start a server and wait until it answers (``/health/ready`` 200 with ``wait_ready``)."""
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("HYBRIDREC_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env |= {
        "OPENBLAS_NUM_THREADS": "1",
        "HYBRIDREC_DATA_DIR": str(data_dir),
        "HYBRIDREC_SYNC_SECONDS": "0.5",
    }
    if database_url is not None:
        env["HYBRIDREC_DATABASE_URL"] = database_url
    if admin_token is not None:
        env["HYBRIDREC_ADMIN_TOKEN"] = admin_token
    env |= extra_env or {}
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / f"server-{port}.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hybridrec.serving",
                "serve",
                "--model-dir",
                str(model_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                *args,
            ],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", log, model_dir, admin_token)
    deadline = time.monotonic() + 90
    with httpx.Client(base_url=server.url, timeout=5) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"server exited with {proc.returncode}:\n{server.logs()}")
            try:
                r = client.get("/health/ready")
                if r.status_code == 200 or not wait_ready:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    server.stop()
    raise AssertionError(f"server not ready in 90 s:\n{server.logs()}")


@pytest.fixture(scope="session")
def launch() -> Callable[..., Server]:
    """`start_server`, for fixtures that manage the server's life themselves."""
    return start_server


@pytest.fixture
def launch_temp() -> Iterator[Callable[..., Server]]:
    """`start_server` whose servers are stopped when the test ends, whatever happened."""
    started: list[Server] = []

    def start(*args: Any, **kwargs: Any) -> Server:
        server = start_server(*args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
