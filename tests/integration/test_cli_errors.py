"""CLI inputs that used to end in a traceback: each is one ``error: ...`` line and exit 2.

Also ``-k`` beyond the catalog (clamped, with a note) and ``similar`` for every model of a
pipeline whose hybrid and router hold a content component over a larger item vocabulary.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
from cli_helpers import (
    FILES_PIPELINE,
    assert_error,
    assert_ok,
    invoke,
    read_csv_text,
    synthetic_ratings,
)

GENRES = ("rock", "jazz", "folk")
PIPELINE = (
    FILES_PIPELINE
    + """

[models.als]
factors = 8
iterations = 4
random_state = 1

[models.itemknn]
neighbors = 20

[models.content]

[models.hybrid]
components = { als = 0.5, content = 0.5 }

[models.router]
cold = "content"
warm = "als"
hot = "hybrid"
"""
)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-errors")
    train, _ = synthetic_ratings()
    train.write_csv(root / "train.csv")
    ids = list(range(1000, 1090))
    pl.DataFrame(
        {
            "item_id": ids,
            "title": [f"{GENRES[(i - 1000) % 3]} album {i}" for i in ids],
            "categories": [GENRES[(i - 1000) % 3].capitalize() for i in ids],
        }
    ).write_csv(root / "items.csv")
    (root / "pipeline.toml").write_text(PIPELINE, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def store(files: Path) -> Path:
    model_dir = files / "models"
    assert_ok(
        invoke(
            "train", "--config", files / "pipeline.toml", "--model-dir", model_dir, "--no-evaluate"
        )
    )
    return model_dir


def _with_cell(files: Path, name: str, column: str, value: object) -> Path:
    """train.csv with the cell of ``column`` on data line 6 (file line 7) set to ``value``."""
    lines = (files / "train.csv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    cells = lines[6].split(",")
    cells[header.index(column)] = str(value)
    lines[6] = ",".join(cells)
    path = files / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("value", ["-9000000000000000000", "-99999999999999999999", "-1e300"])
def test_huge_negative_timestamp(files: Path, tmp_path: Path, value: str) -> None:
    path = _with_cell(files, f"ts{abs(hash(value))}.csv", "timestamp", value)
    ran = invoke("train", "--train", path, "--no-evaluate", "--model-dir", tmp_path / "m")
    assert_error(ran, r"column 'timestamp', line 7: timestamp out of range")


def test_huge_rating_with_keep(files: Path, tmp_path: Path) -> None:
    path = _with_cell(files, "big.csv", "rating", "1e308")
    config = tmp_path / "keep.toml"
    config.write_text(
        f'[data]\nsource = "files"\ninteractions = "{path}"\nimplicit = "keep"\n'
        "[models.als]\nfactors = 4\niterations = 2\n",
        encoding="utf-8",
    )
    ran = invoke("train", "--config", config, "--no-evaluate", "--model-dir", tmp_path / "m")
    line = assert_error(ran, r"big\.csv: column 'rating', line 7: too large")
    assert "1e+308" in line


def test_rating_that_overflows_als(files: Path, tmp_path: Path) -> None:
    # Finite in float32, but the solver's sums overflow: a one-line error, not a traceback.
    path = _with_cell(files, "huge.csv", "rating", "1e30")
    config = tmp_path / "keep.toml"
    config.write_text(
        f'[data]\nsource = "files"\ninteractions = "{path}"\nimplicit = "keep"\n'
        "[models.als]\nfactors = 4\niterations = 2\n",
        encoding="utf-8",
    )
    ran = invoke("train", "--config", config, "--no-evaluate", "--model-dir", tmp_path / "m")
    assert_error(ran, r"als: training diverged")


def test_config_not_utf8(tmp_path: Path) -> None:
    config = tmp_path / "latin1.toml"
    config.write_bytes('# café\n[data]\nsource = "files"\n'.encode("latin-1"))
    ran = invoke("train", "--config", config, "--no-evaluate", "--model-dir", tmp_path / "m")
    assert_error(ran, r"latin1\.toml: not UTF-8 text \(byte 0xe9")


@pytest.mark.parametrize(
    ("url", "pattern"),
    [
        ("mysql://user:hunter2@db.example/shop", r"unsupported database 'mysql://user:\*\*\*@"),
        ("not a url at all", r"cannot parse the database URL"),
        ("postgresql+asyncpg://user@localhost/db", r"driver not available"),
    ],
)
def test_unsupported_database_url(tmp_path: Path, url: str, pattern: str) -> None:
    ran = invoke("events", "export", "--database-url", url, "--output", tmp_path / "e.parquet")
    line = assert_error(ran, pattern)
    assert "hunter2" not in line


def test_serve_with_unsupported_database_url(store: Path) -> None:
    before = {k: v for k, v in os.environ.items() if k.startswith("HYBRIDREC_")}
    ran = invoke("serve", "--model-dir", store, "--database-url", "mysql://u@h/db", "--port", "0")
    assert_error(ran, r"unsupported database")
    # A refused start leaves the process's environment as it was (later children inherit it).
    assert {k: v for k, v in os.environ.items() if k.startswith("HYBRIDREC_")} == before


def test_recommend_huge_k_is_clamped(store: Path) -> None:
    ran = invoke("recommend", "--model-dir", store, "--user", "1", "-k", "1000000000")
    assert ran.code == 0, ran.stderr
    assert "Traceback" not in ran.stderr
    assert "using -k" in ran.stderr
    frame = read_csv_text(ran.stdout)
    assert 0 < frame.height <= 90


@pytest.mark.parametrize("model", ["popularity", "als", "itemknn", "content", "hybrid", "router"])
def test_similar_for_every_model(store: Path, model: str) -> None:
    ran = invoke("similar", "--model-dir", store, "--item", "1002", "--model", model, "-k", "5")
    assert_ok(ran)
    frame = read_csv_text(ran.stdout)
    assert frame.height == 5
    assert 1002 not in frame["item_id"].to_list()


def test_similar_huge_k_is_clamped(store: Path) -> None:
    ran = invoke(
        "similar", "--model-dir", store, "--item", "1002", "--model", "hybrid", "-k", "1000000000"
    )
    assert ran.code == 0, ran.stderr
    assert "using -k" in ran.stderr
    frame = read_csv_text(ran.stdout)
    assert 0 < frame.height < 90
