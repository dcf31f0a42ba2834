"""``hybridrec datasets synthesize``: the files it writes train as they are; bad sizes fail."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from cli_helpers import assert_error, assert_ok, invoke


def test_synthesized_log_trains_and_exports(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ran = invoke(
        "datasets", "synthesize", "--output", data, "--users", "400", "--items", "60",
        "--interactions", "6000", "--chunk-rows", "2500", "--format", "csv", "--string-ids",
    )  # fmt: skip
    assert_ok(ran)
    assert "wrote 6,000 interactions (user_id, item_id, timestamp)" in ran.stdout
    log = pl.read_csv(data / "interactions.csv")
    assert log.height == 6000 and log["user_id"].str.starts_with("u").all()
    assert pl.read_csv(data / "items.csv").columns == ["item_id", "title", "categories", "text"]
    (tmp_path / "p.toml").write_text(
        f'[data]\nsource = "files"\ninteractions = "{data / "interactions.csv"}"\n'
        f'items = "{data / "items.csv"}"\n\n[bundle]\nprecompute_top_n = 0\n\n'
        "[models.als]\nfactors = 8\niterations = 3\nnum_threads = 1\n",
        encoding="utf-8",
    )
    model_dir = tmp_path / "models"
    ran = invoke("train", "-c", tmp_path / "p.toml", "--model-dir", model_dir, "--no-evaluate")
    assert_ok(ran)
    user = log["user_id"][0]
    ran = invoke("recommend", "--model-dir", model_dir, "--user", user, "-k", "3")
    assert_ok(ran)
    recs = pl.read_csv(ran.stdout.encode())
    assert recs.height == 3 and recs["item_id"].str.starts_with("i").all()


def test_bad_sizes_are_one_error_line(tmp_path: Path) -> None:
    ran = invoke("datasets", "synthesize", "-o", tmp_path / "x", "--users", "0")
    assert_error(ran, "users must be at least 1")
    assert not (tmp_path / "x").exists()
