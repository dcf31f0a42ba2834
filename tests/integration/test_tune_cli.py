"""``hybridrec tune --config``: a search on its own that writes the best config out.

Synthetic ratings written into ``tmp_path``; the CLI runs in-process (`invoke`).
"""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path

import pytest
from cli_helpers import (
    SEARCH_CONFIG,
    assert_error,
    assert_ok,
    invoke,
    positives,
    synthetic_ratings,
    write_table,
)

from hybridrec.config import load_config


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tune-cli")
    train, test = synthetic_ratings()
    write_table(train, root / "train.csv")
    write_table(test, root / "test.csv")
    (root / "search.toml").write_text(SEARCH_CONFIG, encoding="utf-8")
    return root


def _tune(files: Path, output: Path, *extra: str) -> dict[str, dict[str, object]]:
    ran = invoke(
        "tune", "--config", files / "search.toml", "--train", files / "train.csv",
        "--output", output, *extra,
    )  # fmt: skip
    assert_ok(ran)
    assert f"wrote {output}" in ran.stdout.replace("\n", "")
    return tomllib.loads(output.read_text(encoding="utf-8"))["models"]


def test_written_config_loads_and_trains(files: Path, tmp_path: Path) -> None:
    best = tmp_path / "best.toml"
    models = _tune(files, best, "--trials", "3")
    als, knn = models["als"], models["itemknn"]
    assert isinstance(als["factors"], int) and 4 <= als["factors"] <= 32
    assert 0.01 <= float(als["regularization"]) <= 10.0  # type: ignore[arg-type]
    assert knn["similarity"] in ("cosine", "bm25")
    cfg = load_config(best)
    assert not cfg.models["als"].search and not cfg.models["itemknn"].search
    assert cfg.models["als"].params["factors"] == als["factors"]
    model_dir = tmp_path / "models"
    ran = invoke(
        "train", "--config", best, "--train", files / "train.csv", "--no-evaluate",
        "--model-dir", model_dir,
    )  # fmt: skip
    assert_ok(ran)
    version = (model_dir / "current").read_text(encoding="utf-8").strip()
    manifest = json.loads((model_dir / version / "manifest.json").read_text(encoding="utf-8"))
    stored = manifest["config"]["models"]["als"]["params"]
    assert stored["factors"] == als["factors"]


def test_seeded_search_writes_the_same_best_twice(files: Path, tmp_path: Path) -> None:
    first = _tune(files, tmp_path / "a.toml")
    second = _tune(files, tmp_path / "b.toml")
    assert first["itemknn"] == second["itemknn"]
    assert first["als"]["factors"] == second["als"]["factors"]
    assert first["als"]["regularization"] == pytest.approx(second["als"]["regularization"])


def test_budget_bounds_the_time(files: Path, tmp_path: Path) -> None:
    start = time.perf_counter()
    _tune(files, tmp_path / "c.toml", "--trials", "100000", "--budget-s", "1")
    # Two searched models at ~1 s each, plus loading, the last trials and the test fits.
    assert time.perf_counter() - start < 15


def test_tune_errors(files: Path, tmp_path: Path) -> None:
    assert_error(invoke("tune"), "--valid .* or --config")
    assert_error(
        invoke("tune", "--config", files / "search.toml", "--output", tmp_path / "x.json"),
        r"must end in \.toml",
    )
    assert_error(
        invoke("tune", "--config", files / "search.toml", "--valid", files / "test.csv"),
        "--valid needs --train",
    )
    bad = tmp_path / "bad.toml"
    bad.write_text("[models.als.search]\nfactors = { low = 9, high = 3 }\n", encoding="utf-8")
    assert_error(invoke("tune", "--config", bad), r"bad\.toml.*factors.*below")


def test_train_without_valid_tunes_on_a_carve_out(files: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    ran = invoke(
        "train", "--config", files / "search.toml", "--train", files / "train.csv",
        "--model-dir", model_dir,
    )  # fmt: skip
    assert_ok(ran)
    assert "search als: best" in ran.stderr and "search itemknn: best" in ran.stderr
    version = (model_dir / "current").read_text(encoding="utf-8").strip()
    manifest = json.loads((model_dir / version / "manifest.json").read_text(encoding="utf-8"))
    assert set(manifest["metrics"]) >= {"popularity", "als", "itemknn"}
    # The final models are fit on all the training rows, not on the carve-out's train part.
    train, _ = synthetic_ratings()
    assert manifest["data"]["rows"] == positives(train)
