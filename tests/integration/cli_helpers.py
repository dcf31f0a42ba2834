"""Helpers shared by the CLI integration tests: run the CLI, read its output, make data."""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from hybridrec.cli import app
from hybridrec.data.synthetic import planted_clusters

HYBRIDREC = Path(sys.executable).parent / "hybridrec"
ERROR_LINE = re.compile(r"^error: \S")

#: The start of a pipeline config over ``train.csv`` + ``items.csv`` beside it, popularity on.
FILES_PIPELINE = """
[data]
source = "files"
interactions = "train.csv"
items = "items.csv"

[models.popularity]
"""

#: A small pipeline with two searched models (ALS, item-kNN), 4 trials each.
SEARCH_CONFIG = """
[tuning]
trials = 4
budget_s = 60
seed = 5

[models.popularity]

[models.als]
factors = 16
iterations = 5
random_state = 1
num_threads = 1

[models.als.search]
factors = { low = 4, high = 32, log = true, type = "int" }
regularization = { low = 0.01, high = 10.0, log = true }

[models.itemknn]
neighbors = 20

[models.itemknn.search]
neighbors = { low = 3, high = 60, type = "int" }
similarity = ["cosine", "bm25"]
"""


# --- helpers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ran:
    """What one CLI invocation produced."""

    code: int
    stdout: str
    stderr: str


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _env(data_home: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HYBRIDREC_MODEL_DIR"}
    env["OPENBLAS_NUM_THREADS"] = "1"
    env["COLUMNS"] = "200"
    if data_home is not None:
        env["HYBRIDREC_DATA_HOME"] = str(data_home)
    return env


def run(*args: str | Path, data_home: Path | None = None, cwd: Path | None = None) -> Ran:
    """The installed ``hybridrec`` script as a real subprocess."""
    assert HYBRIDREC.is_file(), f"no hybridrec script next to {sys.executable}"
    proc = subprocess.run(
        [str(HYBRIDREC), *map(str, args)],
        capture_output=True,
        text=True,
        env=_env(data_home),
        cwd=cwd,
        timeout=240,
        check=False,
    )
    return Ran(proc.returncode, proc.stdout, proc.stderr)


def movielens_home() -> Path:
    """The data home holding MovieLens latest-small (skip locally, fail on CI when absent)."""
    import pytest

    raw = os.environ.get("HYBRIDREC_DATA_HOME", "").strip()
    home = Path(raw) if raw else None
    if home is None or not (home / "ml-latest-small" / "ratings.csv").is_file():
        msg = f"MovieLens latest-small not found (HYBRIDREC_DATA_HOME={raw!r})"
        if _ci():
            pytest.fail(msg + "; CI must provide it")
        pytest.skip(msg)
    return home


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def invoke(*args: str | Path, data_home: Path | None = None) -> Ran:
    """The CLI in-process; an exception escaping the command is rendered as a traceback."""
    env = {"HYBRIDREC_MODEL_DIR": None, "OPENBLAS_NUM_THREADS": "1"}
    if data_home is not None:
        env["HYBRIDREC_DATA_HOME"] = str(data_home)
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += f"\nTraceback (escaped exception): {result.exception!r}"
    return Ran(result.exit_code, result.stdout, stderr)


def assert_ok(ran: Ran) -> None:
    assert ran.code == 0, f"exit {ran.code}\nstdout:\n{ran.stdout}\nstderr:\n{ran.stderr}"
    assert "Traceback" not in ran.stderr, ran.stderr


def assert_error(ran: Ran, pattern: str) -> str:
    """Exit code 2, no traceback, exactly one ``error: ...`` line matching ``pattern``."""
    assert "Traceback" not in ran.stderr, ran.stderr
    assert ran.code == 2, f"exit {ran.code}\nstdout:\n{ran.stdout}\nstderr:\n{ran.stderr}"
    # The preparation summary ("data: ...") is printed before training starts, so a failure
    # in training comes after it; it is information, not part of the error.
    lines = [
        line for line in ran.stderr.splitlines() if line.strip() and not line.startswith("data: ")
    ]
    assert len(lines) == 1, f"expected one error line, got:\n{ran.stderr}"
    assert ERROR_LINE.match(lines[0]), lines[0]
    assert re.search(pattern, lines[0]), f"{pattern!r} not in {lines[0]!r}"
    return lines[0]


def read_csv_text(text: str) -> pl.DataFrame:
    return pl.read_csv(io.StringIO(text))


def store_state(model_dir: Path) -> dict[str, str]:
    """Every file under the store (``current`` and versions) with its content."""
    return {
        str(p.relative_to(model_dir)): p.read_bytes().hex()
        for p in sorted(model_dir.rglob("*"))
        if p.is_file()
    }


def current(model_dir: Path) -> str:
    return (model_dir / "current").read_text(encoding="utf-8").strip()


def version_dirs(model_dir: Path) -> set[str]:
    return {p.name for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}


def temp_leftovers(model_dir: Path) -> list[str]:
    return [p.name for p in model_dir.iterdir() if p.name.startswith(".tmp")]


def table_rows(stdout: str, name: str) -> list[str]:
    """Lines of a printed rich table whose first cell is ``name`` and which hold numbers."""
    row = re.compile(rf"^\W*{re.escape(name)}\s*\W.*\d\.\d{{4}}")
    return [line for line in stdout.splitlines() if row.match(line)]


def synthetic_ratings(
    *, lengths: tuple[int, ...] = (4, 12, 26), seed: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Explicit ratings (``user_id,item_id,rating,timestamp``) split into train and test.

    Users get ``lengths[(user - 1) // 3 % len(lengths)]`` training rows (cold, warm and hot
    users with the defaults) and the next 4 rows as test; every 7th item is rated 2.0 and so
    dropped by the default ``threshold`` conversion, the rest 4.5.
    """
    base = planted_clusters(n_users=90, n_items=90, n_clusters=3, per_user=30, seed=seed)
    df = (
        base.sample(fraction=1.0, shuffle=True, seed=seed)
        .with_columns(pos=pl.int_range(pl.len()).over("user_id"))
        .with_columns(
            length=((pl.col("user_id") - 1) // 3 % len(lengths)).replace_strict(
                dict(enumerate(lengths)), return_dtype=pl.Int64
            ),
            rating=pl.when(pl.col("item_id") % 7 == 0).then(2.0).otherwise(4.5),
        )
    )
    cols = ["user_id", "item_id", "rating", "timestamp"]
    train = df.filter(pl.col("pos") < pl.col("length")).select(cols)
    test = df.filter(
        (pl.col("pos") >= pl.col("length")) & (pl.col("pos") < pl.col("length") + 4)
    ).select(cols)
    return train, test


def write_table(df: pl.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        df.write_parquet(path)
    else:
        df.write_csv(path)
    return path


def positives(df: pl.DataFrame) -> int:
    return df.filter(pl.col("rating") >= 4.0).height
