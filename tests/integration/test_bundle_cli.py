"""``hybridrec bundle ...`` and the store through the CLI: verify, info, promote, rollback,
save, import, ``--version`` everywhere, a writer killed mid-save, float32 on MovieLens."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from cli_helpers import (
    HYBRIDREC,
    _ci,
    _env,
    assert_error,
    assert_ok,
    current,
    invoke,
    read_csv_text,
    run,
    synthetic_ratings,
    temp_leftovers,
    version_dirs,
    write_table,
)

MODELS = """
[models.popularity]

[models.als]
factors = 16
iterations = 5
random_state = 1

[models.itemknn]
neighbors = 20
"""


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store with two versions trained on synthetic files; the second is current."""
    train, test = synthetic_ratings()
    write_table(train, tmp_path / "train.csv")
    write_table(test, tmp_path / "test.parquet")
    config = tmp_path / "syn.toml"
    config.write_text(
        '[data]\nsource = "files"\ninteractions = "train.csv"\n' + MODELS, encoding="utf-8"
    )
    model_dir = tmp_path / "models"
    for _ in range(2):
        assert_ok(invoke("train", "--config", config, "--model-dir", model_dir, "--no-evaluate"))
    assert len(version_dirs(model_dir)) == 2
    return model_dir


def versions(model_dir: Path) -> list[str]:
    return sorted(version_dirs(model_dir))


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def recommend(model_dir: Path, *extra: str) -> pl.DataFrame:
    ran = invoke(
        "recommend", "--model-dir", model_dir, "--user", "1", "--user", "5", "-k", "5", *extra
    )
    assert_ok(ran)
    return read_csv_text(ran.stdout)


def test_list_marks_current(store: Path) -> None:
    ran = invoke("bundle", "list", "--model-dir", store)
    assert_ok(ran)
    v1, v2 = versions(store)
    lines = {line for line in ran.stdout.splitlines() if v1 in line or v2 in line}
    assert any(v2 in line and "*" in line for line in lines), ran.stdout
    assert any(v1 in line and "*" not in line for line in lines), ran.stdout


def test_verify_prints_counts_and_fails_on_any_flipped_byte(store: Path) -> None:
    ran = invoke("bundle", "verify", "--model-dir", store)
    assert_ok(ran)
    assert "hashes match" in ran.stdout
    assert "als" in ran.stdout and "16" in ran.stdout  # factors column
    version = current(store)
    for name in ("cf.joblib", "items.parquet"):
        path = store / version / name
        if not path.exists():
            continue
        original = path.read_bytes()
        flip_byte(path)
        assert_error(invoke("bundle", "verify", "--model-dir", store), rf"{name}: BLAKE3 mismatch")
        path.write_bytes(original)
    assert_ok(invoke("bundle", "verify", "--model-dir", store))


def test_info_reads_only_the_manifest(store: Path) -> None:
    version = current(store)
    (store / version / "cf.joblib").write_bytes(b"garbage")  # large files are never read
    ran = invoke("bundle", "info", "--model-dir", store)
    assert_ok(ran)
    info = json.loads(ran.stdout)
    assert info["version"] == version
    assert info["format"] == 2
    assert set(info["models"]) == {"popularity", "als", "itemknn"}
    assert info["files"]["cf.joblib"]["size"] > 7
    assert "config_hash" in info and "data" in info and "libraries" in info


def test_commands_refuse_a_corrupted_version(store: Path) -> None:
    flip_byte(store / current(store) / "cf.joblib")
    assert_error(
        invoke("recommend", "--model-dir", store, "--user", "1"), r"cf\.joblib: BLAKE3 mismatch"
    )


def test_version_option_reads_another_version(store: Path) -> None:
    v1, v2 = versions(store)
    flip_byte(store / v2 / "cf.joblib")
    frame = recommend(store, "--version", v1)
    assert frame.height == 10
    assert_ok(invoke("similar", "--model-dir", store, "--item", "1000", "--version", v1))
    assert_error(
        invoke("recommend", "--model-dir", store, "--user", "1", "--version", "nope"), "nope"
    )


def test_promote_and_rollback(store: Path) -> None:
    v1, v2 = versions(store)
    assert current(store) == v2
    ran = invoke("bundle", "rollback", "--model-dir", store)
    assert_ok(ran)
    assert current(store) == v1
    assert_error(invoke("bundle", "rollback", "--model-dir", store), "no version before")
    assert_ok(invoke("bundle", "promote", v2, "--model-dir", store))
    assert current(store) == v2
    # A corrupted version is not promoted.
    flip_byte(store / v1 / "cf.joblib")
    assert_error(invoke("bundle", "promote", v1, "--model-dir", store), r"cf\.joblib")
    assert current(store) == v2


def test_save_compressed_float32_answers_the_same(store: Path) -> None:
    before = recommend(store)
    ran = invoke("bundle", "save", "--model-dir", store, "--compress", "lz4:1", "--float32")
    assert_ok(ran)
    version = current(store)
    manifest = json.loads((store / version / "manifest.json").read_text())
    assert manifest["bundle"] == {"compression": "lz4:1", "float32": True, "top_n": None}
    assert manifest["derived_from"] in versions(store)
    assert recommend(store).equals(before)
    # Into another store, not promoted there.
    other = store.parent / "shipping"
    assert_ok(invoke("bundle", "save", "--model-dir", store, "--to", other, "--no-promote"))
    assert len(version_dirs(other)) == 1
    assert not (other / "current").exists()


def test_train_compress_option_and_bad_codec(store: Path, tmp_path: Path) -> None:
    config = tmp_path / "syn.toml"
    assert_ok(
        invoke(
            "train",
            "--config",
            config,
            "--model-dir",
            store,
            "--no-evaluate",
            "--compress",
            "zlib:2",
        )
    )
    manifest = json.loads((store / current(store) / "manifest.json").read_text())
    assert manifest["bundle"]["compression"] == "zlib:2"
    ran = invoke("train", "--config", config, "--model-dir", store, "--compress", "rar")
    assert_error(ran, "unknown compression 'rar'")


def test_evaluate_a_stored_version(store: Path, tmp_path: Path) -> None:
    ran = invoke(
        "evaluate", "--model-dir", store, "--test", tmp_path / "test.parquet", "--format", "json"
    )
    assert_ok(ran)
    result = json.loads(ran.stdout)
    assert set(result) == {"popularity", "als", "itemknn"}
    assert result["als"]["ndcg@10"] > result["popularity"]["ndcg@10"]
    assert_error(invoke("evaluate", "--model-dir", store), "--model-dir takes --test")


def test_import_loose_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    loose = tmp_path / "loose"
    loose.mkdir()
    np.save(loose / "user_factors.npy", rng.normal(size=(30, 4)))
    np.save(loose / "item_factors.npy", rng.normal(size=(20, 4)))
    (loose / "user_ids.txt").write_text("\n".join(str(i) for i in range(1, 31)))
    (loose / "item_ids.txt").write_text("\n".join(str(i) for i in range(100, 120)))
    model_dir = tmp_path / "models"
    ran = invoke("bundle", "import", loose, "--model-dir", model_dir)
    assert_ok(ran)
    assert "user_factors.npy" in ran.stderr
    assert_ok(invoke("bundle", "verify", "--model-dir", model_dir))
    frame = recommend(model_dir)
    assert frame["user_id"].to_list() == [1] * 5 + [5] * 5


def test_killed_save_leaves_the_store_as_it_was(store: Path, tmp_path: Path) -> None:
    """SIGKILL a real ``bundle import`` while it writes; current and versions are untouched."""
    before = current(store)
    before_versions = versions(store)
    loose = tmp_path / "big"
    loose.mkdir()
    rng = np.random.default_rng(0)
    # ~100 MB of factors, xz-compressed: the write takes many seconds, time enough to kill it.
    np.save(loose / "user_factors.npy", rng.normal(size=(200_000, 64)))
    np.save(loose / "item_factors.npy", rng.normal(size=(500, 64)))
    np.save(loose / "user_ids.npy", np.arange(200_000))
    np.save(loose / "item_ids.npy", np.arange(500))
    proc = subprocess.Popen(
        [
            str(HYBRIDREC),
            "bundle",
            "import",
            str(loose),
            "--model-dir",
            str(store),
            "--compress",
            "xz:6",
        ],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    partial = None
    while time.monotonic() < deadline and proc.poll() is None:
        temps = [p for p in store.glob(".tmp-*/cf.joblib") if p.stat().st_size > 0]
        if temps:
            partial = temps[0]
            break
        time.sleep(0.02)
    assert partial is not None, f"the save never started writing (exit {proc.poll()})"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert current(store) == before
    assert versions(store) == before_versions
    assert temp_leftovers(store)  # the half-written directory is there, and ignored
    assert_ok(invoke("bundle", "verify", "--model-dir", store))
    assert recommend(store).height == 10
    # The next write clears the dead writer's leftovers.
    assert_ok(invoke("bundle", "save", "--model-dir", store, "--no-promote"))
    assert temp_leftovers(store) == []
    assert current(store) == before


# ---- MovieLens: float32 storage halves the size and keeps every user's top-10 ---------------


@pytest.fixture(scope="module")
def ml_home() -> Path:
    raw = os.environ.get("HYBRIDREC_DATA_HOME", "").strip()
    home = Path(raw) if raw else None
    if home is None or not (home / "ml-latest-small" / "ratings.csv").is_file():
        if _ci():
            pytest.fail("MovieLens latest-small not found; CI must provide it")
        pytest.skip("MovieLens latest-small not found")
    return home


@pytest.mark.slow
def test_float32_halves_size_and_keeps_movielens_top10(ml_home: Path, tmp_path: Path) -> None:
    config = tmp_path / "f64.toml"
    config.write_text(
        '[models.ease]\nregularization = 100.0\ndtype = "float64"\n'
        "[models.als]\nfactors = 64\niterations = 10\n",
        encoding="utf-8",
    )
    model_dir = tmp_path / "models"
    assert_ok(
        run(
            "train",
            "--config",
            config,
            "--model-dir",
            model_dir,
            "--no-evaluate",
            data_home=ml_home,
        )
    )
    full = current(model_dir)
    assert_ok(run("bundle", "save", "--model-dir", model_dir, "--float32"))
    half = current(model_dir)
    size = {v: (model_dir / v / "cf.joblib").stat().st_size for v in (full, half)}
    assert size[half] < 0.55 * size[full], size
    for model in ("ease", "als"):
        tops = {}
        for version in (full, half):
            out = tmp_path / f"{model}-{version}.parquet"
            assert_ok(
                run(
                    "recommend",
                    "--model-dir",
                    model_dir,
                    "--version",
                    version,
                    "--all-users",
                    "-k",
                    "10",
                    "--model",
                    model,
                    "--output",
                    out,
                )
            )
            tops[version] = pl.read_parquet(out).select("user_id", "item_id", "rank")
        assert tops[full].height == 10 * tops[full]["user_id"].n_unique() > 6000
        assert tops[half].equals(tops[full]), f"{model}: top-10 changed with float32 storage"


def test_tune_writes_the_chosen_weights_back(tmp_path: Path) -> None:
    train, test = synthetic_ratings()
    write_table(train, tmp_path / "train.csv")
    write_table(test, tmp_path / "valid.parquet")
    config = tmp_path / "hybrid.toml"
    config.write_text(
        '[data]\nsource = "files"\ninteractions = "train.csv"\n'
        + MODELS
        + "[models.hybrid]\ncomponents = { als = 0.5, itemknn = 0.5 }\n",
        encoding="utf-8",
    )
    model_dir = tmp_path / "models"
    assert_ok(invoke("train", "--config", config, "--model-dir", model_dir, "--no-evaluate"))
    before = current(model_dir)
    ran = invoke(
        "tune", "--model-dir", model_dir, "--valid", tmp_path / "valid.parquet", "--step", "0.25"
    )
    assert_ok(ran)
    after = current(model_dir)
    assert after != before
    manifest = json.loads((model_dir / after / "manifest.json").read_text())
    weights = manifest["tuned"]["weights"]
    assert set(weights) == {"als", "itemknn"} and abs(sum(weights.values()) - 1) < 1e-9
    assert all(w in (0.0, 0.25, 0.5, 0.75, 1.0) for w in weights.values())
    assert manifest["models"]["hybrid"]["params"]["components"] == weights
    assert manifest["derived_from"] == before
    frame = recommend(model_dir, "--model", "hybrid")
    assert frame["method"].unique().to_list() == ["hybrid"]
    assert_error(
        invoke(
            "tune",
            "--model-dir",
            model_dir,
            "--valid",
            tmp_path / "valid.parquet",
            "--model",
            "als",
        ),
        "not a hybrid",
    )
