"""Any user's data: the default config, through the CLI, on shapes other than the demo's.

Each shape is made at test time from MovieLens latest-small (`hybridrec.data.shapes`) or
from `hybridrec.data.synthetic`, trained with ``configs/default.toml`` and only ``--train``
(and ``--items`` where a catalog exists), and must give a store whose ``hybrid`` answers
every test user. MovieLens is cut to a sample of its users to keep the suite fast; the
benchmark (``make bench-data``) runs the whole files.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from cli_helpers import HYBRIDREC, _env, assert_error, assert_ok, run

from hybridrec.data.loaders import load_dataset
from hybridrec.data.shapes import write_shape
from hybridrec.data.synthetic import random_catalog, random_interactions

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "default.toml"
K = 10


@pytest.fixture(scope="module")
def movielens() -> tuple[pl.DataFrame, pl.DataFrame]:
    raw = load_dataset("movielens-latest-small", download=False)
    assert raw.items is not None
    users = raw.interactions["user_id"].unique().sort()
    sample = users.sample(n=200, seed=7)
    ratings = raw.interactions.filter(pl.col("user_id").is_in(sample.to_list()))
    ratings = ratings.rename({"weight": "rating"})
    return ratings, raw.items.select("item_id", "title", "categories", "tags")


def _answers_every_test_user(model_dir: Path, test: Path, tmp: Path) -> pl.DataFrame:
    users = tmp / "test_users.csv"
    expected = pl.read_csv(test, infer_schema_length=0).select("user_id").unique()
    expected.write_csv(users)
    out = tmp / "recs.csv"
    ran = run(
        "recommend",
        "--model-dir",
        model_dir,
        "--model",
        "hybrid",
        "--users-file",
        users,
        "-k",
        K,
        "--output",
        out,
    )
    assert_ok(ran)
    recs = pl.read_csv(out, infer_schema_length=0)
    per_user = recs.group_by("user_id").len()
    assert set(per_user["user_id"].to_list()) == set(expected["user_id"].to_list())
    assert per_user["len"].min() == K
    assert recs.filter(pl.col("reason").is_null() | (pl.col("reason") == "")).height == 0
    return recs


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["ratings", "no_ratings", "leave_last_one_out", "string_ids"])
def test_default_config_trains_and_answers_every_test_user(
    shape: str, movielens: tuple[pl.DataFrame, pl.DataFrame], tmp_path: Path
) -> None:
    ratings, items = movielens
    files = write_shape(shape, ratings, items, tmp_path / "data", seed=1)
    assert files.items is not None
    model_dir = tmp_path / "models"
    ran = run(
        "train",
        "--config",
        CONFIG,
        "--train",
        files.train,
        "--items",
        files.items,
        "--model-dir",
        model_dir,
    )
    assert_ok(ran)
    assert "skipped" not in ran.stderr, ran.stderr  # content, hybrid and router all train
    assert "data: " in ran.stderr  # what the conversion did is printed
    if shape == "no_ratings":
        assert "every interaction is a positive" in ran.stderr
    else:
        assert ">= 4" in ran.stderr
    recs = _answers_every_test_user(model_dir, files.test, tmp_path)
    if shape == "string_ids":
        train_items = set(pl.read_csv(files.train)["item_id"].to_list())
        assert set(recs["item_id"].to_list()) <= set(pl.read_csv(files.items)["item_id"].to_list())
        assert len(train_items & set(recs["item_id"].to_list())) > 0


@pytest.mark.slow
def test_large_synthetic_catalog_exercises_the_ease_head_path(tmp_path: Path) -> None:
    n_items = 50_000
    catalog = random_catalog(n_items, seed=3)
    events = random_interactions(1_500, n_items, 60_000, seed=3, skew=0.8)
    assert events["item_id"].n_unique() > 10_000  # more items than EASE's max_items
    train = tmp_path / "train.parquet"
    events.select("user_id", "item_id", "timestamp").write_parquet(train)
    items = tmp_path / "items.parquet"
    catalog.write_parquet(items)
    model_dir = tmp_path / "models"
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run(
        [
            *(str(HYBRIDREC), "train", "--config", str(CONFIG), "--train", str(train)),
            *("--items", str(items), "--model-dir", str(model_dir)),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
        check=False,
    )
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    sys.stderr.write(
        f"\n50,000-item catalog: train {time.perf_counter() - start:.0f} s, peak RSS "
        f"{max(peak_kb, before) / 1024:.0f} MB\n"
    )
    from hybridrec.pipeline.artifacts import load_pipeline

    pipeline = load_pipeline(model_dir, None)
    ease = pipeline.model("ease")
    assert ease.modeled_items == 10_000  # the head path, not a refusal
    test = tmp_path / "users.csv"
    pl.DataFrame({"user_id": [1, 2, 3, 999_999]}).write_csv(test)
    recs = _answers_every_test_user(model_dir, test, tmp_path)
    assert recs.height == 4 * K


def test_a_conversion_that_drops_everything_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    events = random_interactions(50, 40, 300, seed=1)
    train = tmp_path / "clicks.csv"
    events.select("user_id", "item_id").write_csv(train)
    config = tmp_path / "threshold.toml"
    config.write_text('[data]\nimplicit = "threshold"\nmin_rating = 4.0\n[models.als]\n')
    ran = run("train", "--config", config, "--train", train, "--model-dir", tmp_path / "m")
    assert_error(ran, r"no interactions left after implicit conversion .*implicit = \"auto\"")
