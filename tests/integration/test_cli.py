"""The ``hybridrec`` command line end to end.

The MovieLens flow runs the installed ``hybridrec`` script as a real subprocess (train once per
module, then recommend / similar against that store). Synthetic files written into
``tmp_path`` cover ``--train/--valid``, ``evaluate``, the model store's promotion rules and the
many error paths; most error paths go through `typer.testing.CliRunner` because they are many
and a subprocess costs a second or two each.

MovieLens latest-small is read from ``HYBRIDREC_DATA_HOME``; without it the MovieLens tests
skip locally and fail when ``CI`` is set.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from cli_helpers import (
    Ran,
    assert_error,
    assert_ok,
    current,
    invoke,
    movielens_home,
    positives,
    read_csv_text,
    run,
    store_state,
    synthetic_ratings,
    table_rows,
    temp_leftovers,
    version_dirs,
    write_table,
)

ML_DIR = "ml-latest-small"
ML_MODELS = ("popularity", "als", "itemknn")
SYN_MODELS = ("popularity", "als", "itemknn")

ML_CONFIG = """
[split]
seed = 7

[evaluation]
k = [10]

[models.popularity]

[models.als]
factors = 32
iterations = 8
random_state = 1

[models.itemknn]
neighbors = 50
"""

SYN_MODEL_TABLES = """
[models.popularity]

[models.als]
factors = 16
iterations = 5
random_state = 1

[models.itemknn]
neighbors = 20
"""


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_home() -> Path:
    """The data home holding MovieLens latest-small (skip locally, fail on CI when absent)."""
    return movielens_home()


@dataclass(frozen=True)
class MlStore:
    model_dir: Path
    data_home: Path
    train: Ran
    manifest: dict
    ratings: pl.DataFrame


@pytest.fixture(scope="module")
def ml_store(tmp_path_factory: pytest.TempPathFactory, data_home: Path) -> MlStore:
    """MovieLens latest-small trained once with popularity, ALS (32 factors) and item-kNN."""
    root = tmp_path_factory.mktemp("ml")
    config = root / "small.toml"
    config.write_text(ML_CONFIG, encoding="utf-8")
    model_dir = root / "models"
    ran = run("train", "--config", config, "--model-dir", model_dir, data_home=data_home)
    assert_ok(ran)
    version = current(model_dir)
    manifest = json.loads((model_dir / version / "manifest.json").read_text(encoding="utf-8"))
    ratings = pl.read_csv(data_home / ML_DIR / "ratings.csv")
    return MlStore(model_dir, data_home, ran, manifest, ratings)


@pytest.fixture
def syn_files(tmp_path: Path) -> dict[str, Path]:
    """Synthetic train/valid (CSV) and train/test (Parquet) rating files and a config."""
    train, test = synthetic_ratings()
    config = tmp_path / "syn.toml"
    config.write_text(
        '[data]\nsource = "files"\ninteractions = "train.csv"\n' + SYN_MODEL_TABLES,
        encoding="utf-8",
    )
    return {
        "config": config,
        "train_csv": write_table(train, tmp_path / "train.csv"),
        "valid_csv": write_table(test, tmp_path / "valid.csv"),
        "train_parquet": write_table(train, tmp_path / "train.parquet"),
        "test_parquet": write_table(test, tmp_path / "test.parquet"),
    }


@pytest.fixture
def syn_store(tmp_path: Path, syn_files: dict[str, Path]) -> Iterator[Path]:
    """A model store with one promoted version trained on the synthetic files."""
    model_dir = tmp_path / "store"
    assert_ok(invoke("train", "--config", syn_files["config"], "--model-dir", model_dir))
    assert len(version_dirs(model_dir)) == 1
    yield model_dir


# --- 1. end to end on MovieLens -----------------------------------------------------------------


def test_train_prints_a_table_row_per_model(ml_store: MlStore) -> None:
    out = ml_store.train.stdout
    assert "ndcg@10" in out
    for name in ML_MODELS:
        assert table_rows(out, name), f"no metrics row for {name} in:\n{out}"
    assert re.search(r"saved version \S+ \(current\)", out), out


def test_train_writes_a_complete_manifest(ml_store: MlStore) -> None:
    version = current(ml_store.model_dir)
    assert (ml_store.model_dir / version).is_dir()
    manifest = ml_store.manifest
    assert manifest["version"] == version
    assert list(manifest["models"]) == list(ML_MODELS)
    for name in ML_MODELS:
        file = manifest["parts"][manifest["models"][name]["part"]]["file"]
        path = ml_store.model_dir / version / file
        assert manifest["files"][file]["size"] == path.stat().st_size
        ndcg = manifest["metrics"][name]["ndcg@10"]
        assert 0.0 < ndcg < 1.0, (name, ndcg)
    assert manifest["models"]["als"]["params"]["factors"] == 32
    assert manifest["default_model"] in ML_MODELS
    # Personalized models beat the popularity baseline on MovieLens by a wide margin.
    pop = manifest["metrics"]["popularity"]["ndcg@10"]
    assert manifest["metrics"]["als"]["ndcg@10"] > pop
    data = manifest["data"]
    assert data["source"] == "movielens-latest-small"
    assert 40_000 < data["rows"] < 60_000
    assert data["rows"] == positives(ml_store.ratings)
    assert data["users"] == ml_store.ratings.filter(pl.col("rating") >= 4)["userId"].n_unique()
    assert re.fullmatch(r"[0-9a-f]{16}", data["hash"])
    assert temp_leftovers(ml_store.model_dir) == []


def test_manifest_is_strict_json(ml_store: MlStore) -> None:
    """manifest.json must parse with any JSON reader: no NaN / Infinity tokens."""
    text = (ml_store.model_dir / current(ml_store.model_dir) / "manifest.json").read_text()

    def reject(token: str) -> None:
        raise AssertionError(f"manifest.json holds the non-JSON token {token}")

    json.loads(text, parse_constant=reject)


def test_recommend_one_user(ml_store: MlStore) -> None:
    ran = run("recommend", "--model-dir", ml_store.model_dir, "--user", "1", "-k", "5")
    assert_ok(ran)
    df = read_csv_text(ran.stdout)
    assert df.columns[:4] == ["user_id", "item_id", "rank", "score"]
    assert set(df.columns) <= {"user_id", "item_id", "rank", "score", "method", "reason", "title"}
    assert df.height == 5
    # Every row says which model produced it and why.
    assert df["method"].to_list() == [ml_store.manifest["default_model"]] * 5
    assert df["reason"].str.len_chars().min() > 0
    assert df["user_id"].to_list() == [1] * 5
    assert df["rank"].to_list() == [1, 2, 3, 4, 5]
    assert df["item_id"].n_unique() == 5
    assert df["score"].to_list() == sorted(df["score"].to_list(), reverse=True)
    seen = ml_store.ratings.filter((pl.col("userId") == 1) & (pl.col("rating") >= 4))
    assert not set(df["item_id"].to_list()) & set(seen["movieId"].to_list())
    if "title" in df.columns:
        assert df["title"].null_count() == 0


def test_because_you_liked_names_a_movie_the_user_liked(ml_store: MlStore) -> None:
    ran = run(
        "recommend",
        "--model-dir",
        ml_store.model_dir,
        "--user",
        "1",
        "--user",
        "414",
        "-k",
        "10",
        "--strategy",
        "als",
    )
    assert_ok(ran)
    df = read_csv_text(ran.stdout)
    movies = pl.read_csv(ml_store.data_home / ML_DIR / "movies.csv")
    liked = ml_store.ratings.filter(pl.col("rating") >= 4).join(movies, on="movieId")
    checked = 0
    for user, reason in df.select("user_id", "reason").iter_rows():
        assert reason
        for part in reason.split("; "):
            if part.startswith("because you liked "):
                title = part.removeprefix("because you liked ")
                # The catalog keeps titles without their "(year)".
                titles = [
                    re.sub(r"\s*\(\d{4}\)\s*$", "", t)
                    for t in liked.filter(pl.col("userId") == user)["title"].to_list()
                ]
                assert title in titles, (user, title)
                checked += 1
    assert checked >= 10


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_recommend_all_users_to_file(ml_store: MlStore, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"out{suffix}"
    ran = run(
        "recommend", "--model-dir", ml_store.model_dir, "--all-users", "-k", "3", "--output", path
    )
    assert_ok(ran)
    df = pl.read_parquet(path) if suffix == ".parquet" else pl.read_csv(path)
    assert df.columns == ["user_id", "item_id", "rank", "score", "method", "reason"]
    assert df["reason"].null_count() == 0 and df["reason"].str.len_chars().min() > 0
    # Every user the model knows: the 610 MovieLens users but user 442, who rated nothing >= 4.
    known = ml_store.manifest["data"]["users"]
    assert known == 609
    assert df.height == known * 3
    assert df["user_id"].n_unique() == known
    assert set(df["rank"].unique().to_list()) == {1, 2, 3}
    per_user = df.group_by("user_id").agg(pl.col("rank").sort())
    assert per_user["rank"].to_list() == [[1, 2, 3]] * known
    assert df.select(pl.struct("user_id", "item_id").is_unique().all()).item()
    assert not list(tmp_path.glob(".*.tmp"))


def test_similar_items(ml_store: MlStore) -> None:
    ran = run(
        "similar", "--model-dir", ml_store.model_dir, "--item", "260", "-k", "3", "--model", "als"
    )
    assert_ok(ran)
    df = read_csv_text(ran.stdout)
    assert df.height == 3
    assert df["query_item_id"].to_list() == [260] * 3
    assert df["rank"].to_list() == [1, 2, 3]
    assert 260 not in df["item_id"].to_list()
    # Star Wars IV's nearest neighbours include another original-trilogy film.
    assert {1196, 1210} & set(df["item_id"].to_list())


def test_similar_unknown_model_lists_the_available_ones(ml_store: MlStore) -> None:
    ran = run(
        "similar", "--model-dir", ml_store.model_dir, "--item", "260", "-k", "3", "--model", "nope"
    )
    line = assert_error(ran, r"'nope'")
    for name in ML_MODELS:
        assert name in line


# --- 2. users files and fold-in -----------------------------------------------------------------


def test_users_file_folds_in_a_new_user(ml_store: MlStore, tmp_path: Path) -> None:
    history = [260, 1196, 1210, 1198, 2571]
    users = pl.DataFrame(
        {"user_id": [987654321] * len(history) + [1], "item_id": [*history, None]},
        schema={"user_id": pl.Int64, "item_id": pl.Int64},
    )
    path = write_table(users, tmp_path / "users.csv")
    ran = run("recommend", "--model-dir", ml_store.model_dir, "--users-file", path, "-k", "7")
    assert_ok(ran)
    df = read_csv_text(ran.stdout)
    new = df.filter(pl.col("user_id") == 987654321)
    assert new.height == 7
    assert new["rank"].to_list() == list(range(1, 8))
    assert not set(new["item_id"].to_list()) & set(history)
    assert df.filter(pl.col("user_id") == 1).height == 7


def test_users_file_with_text_id_for_new_user_next_to_known_user(
    ml_store: MlStore, tmp_path: Path
) -> None:
    """A new user named by text, in the same file as a known (integer) user."""
    path = tmp_path / "users.csv"
    path.write_text("user_id,item_id\nnewbie,260\nnewbie,1196\n1,\n", encoding="utf-8")
    ran = invoke("recommend", "--model-dir", ml_store.model_dir, "--users-file", path, "-k", "3")
    assert_ok(ran)
    df = read_csv_text(ran.stdout)
    assert df.filter(pl.col("user_id").cast(pl.String) == "newbie").height == 3
    assert df.filter(pl.col("user_id").cast(pl.String) == "1").height == 3


def test_users_file_without_user_id_column(ml_store: MlStore, tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("uid,item_id\n1,260\n", encoding="utf-8")
    ran = run("recommend", "--model-dir", ml_store.model_dir, "--users-file", path, "-k", "3")
    assert_error(ran, r"people\.csv.*'user_id'")


# --- 3. --train/--valid and evaluate ------------------------------------------------------------


def test_train_with_train_and_valid_files(syn_files: dict[str, Path], tmp_path: Path) -> None:
    model_dir = tmp_path / "tv"
    ran = run(
        "train",
        "--config",
        syn_files["config"],
        "--train",
        syn_files["train_csv"],
        "--valid",
        syn_files["valid_csv"],
        "--model-dir",
        model_dir,
    )
    assert_ok(ran)
    for name in SYN_MODELS:
        assert table_rows(ran.stdout, name), f"no metrics row for {name} in:\n{ran.stdout}"
    manifest = json.loads((model_dir / current(model_dir) / "manifest.json").read_text())
    assert list(manifest["models"]) == list(SYN_MODELS)
    assert set(manifest["metrics"]) == set(SYN_MODELS)
    # Final models are fit on train + valid, ratings below 4 dropped by the threshold.
    train = pl.read_csv(syn_files["train_csv"])
    valid = pl.read_csv(syn_files["valid_csv"])
    assert manifest["data"]["rows"] == positives(train) + positives(valid)
    assert manifest["data"]["rows"] < train.height + valid.height


def test_evaluate_json_is_one_object_per_model(syn_files: dict[str, Path]) -> None:
    ran = run(
        "evaluate",
        "--config",
        syn_files["config"],
        "--train",
        syn_files["train_parquet"],
        "--test",
        syn_files["test_parquet"],
        "--format",
        "json",
    )
    assert_ok(ran)
    payload = json.loads(ran.stdout)  # the whole of stdout is one JSON document
    assert isinstance(payload, dict)
    assert set(payload) == set(SYN_MODELS)
    for name, report in payload.items():
        for key in ("ndcg@10", "recall@10", "fit_seconds", "eval_seconds"):
            assert isinstance(report[key], float | int), (name, key, report.get(key))
        assert 0.0 <= report["ndcg@10"] <= 1.0
        assert 0.0 <= report["recall@10"] <= 1.0
        assert report["fit_seconds"] >= 0.0


def test_evaluate_json_adds_popularity(tmp_path: Path, syn_files: dict[str, Path]) -> None:
    config = tmp_path / "knn.toml"
    config.write_text("[models.itemknn]\nneighbors = 20\n", encoding="utf-8")
    ran = invoke(
        "evaluate",
        "--config",
        config,
        "--train",
        syn_files["train_parquet"],
        "--test",
        syn_files["test_parquet"],
        "--format",
        "json",
    )
    assert_ok(ran)
    assert set(json.loads(ran.stdout)) == {"popularity", "itemknn"}


def test_evaluate_json_with_an_empty_user_segment(tmp_path: Path) -> None:
    """Every user warm: the cold and hot segments are empty, yet the JSON must print."""
    train, test = synthetic_ratings(lengths=(12,))
    config = tmp_path / "pop.toml"
    config.write_text("[models.popularity]\n", encoding="utf-8")
    ran = invoke(
        "evaluate",
        "--config",
        config,
        "--train",
        write_table(train, tmp_path / "train.parquet"),
        "--test",
        write_table(test, tmp_path / "test.parquet"),
        "--format",
        "json",
    )
    assert_ok(ran)
    payload = json.loads(ran.stdout)
    assert 0.0 <= payload["popularity"]["ndcg@10"] <= 1.0


# --- 4. bad input -------------------------------------------------------------------------------


@pytest.fixture
def small_config(tmp_path: Path) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(SYN_MODEL_TABLES, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "content", "pattern"),
    [
        ("pairs.csv", "user,item\n1,2\n", r"pairs\.csv.*missing column.*'user_id'"),
        ("empty.csv", "", r"empty\.csv.*no rows"),
        ("header.csv", "user_id,item_id,rating\n", r"header\.csv.*no rows"),
        (
            "badweight.csv",
            "user_id,item_id,weight\n1,2,1\n1,3,1\n2,3,heavy\n",
            r"badweight\.csv.*column 'weight', line 4.*'heavy'",
        ),
    ],
)
def test_train_file_errors(
    tmp_path: Path, small_config: Path, name: str, content: str, pattern: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    model_dir = tmp_path / "models"
    ran = invoke("train", "--config", small_config, "--train", path, "--model-dir", model_dir)
    assert_error(ran, pattern)
    assert not model_dir.exists() or not any(model_dir.iterdir())


@pytest.fixture
def bad_rating_file(tmp_path: Path) -> Path:
    path = tmp_path / "ratings.csv"
    path.write_text("user_id,item_id,rating\n1,2,5\n1,3,4\n2,3,abc\n", encoding="utf-8")
    return path


def test_wrong_type_names_line_and_value(
    tmp_path: Path, small_config: Path, bad_rating_file: Path
) -> None:
    ran = invoke(
        "train", "--config", small_config, "--train", bad_rating_file, "--model-dir", tmp_path
    )
    assert_error(ran, r"ratings\.csv.*line 4.*'abc'")


def test_wrong_type_names_the_files_own_column(
    tmp_path: Path, small_config: Path, bad_rating_file: Path
) -> None:
    """The file has a 'rating' column; the error must name it, not the internal 'weight'."""
    ran = invoke(
        "train", "--config", small_config, "--train", bad_rating_file, "--model-dir", tmp_path
    )
    assert_error(ran, r"column 'rating'")


def test_unknown_user(ml_store: MlStore) -> None:
    ran = invoke(
        "recommend",
        "--model-dir",
        ml_store.model_dir,
        "--user",
        "99999999",
        "-k",
        "5",
        "--unknown",
        "error",
    )
    assert_error(ran, r"unknown user id.*99999999")


def _batch_with_unknowns(tmp_path: Path) -> Path:
    path = tmp_path / "batch.csv"
    path.write_text("user_id\n1\n99999999\n414\n88888888\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("model", ["als", "itemknn"])
def test_unknown_users_in_a_batch_get_the_fallback_chain(
    ml_store: MlStore, tmp_path: Path, model: str
) -> None:
    out = tmp_path / "recs.csv"
    ran = invoke(
        "recommend",
        "--model-dir",
        ml_store.model_dir,
        "--users-file",
        _batch_with_unknowns(tmp_path),
        "--model",
        model,
        "-k",
        "4",
        "--output",
        out,
    )
    assert_ok(ran)
    assert "2 unknown user(s) answered through the fallback chain" in ran.stderr
    df = pl.read_csv(out)
    assert df.columns == ["user_id", "item_id", "rank", "score", "method", "reason"]
    # Every user answered, in the file's order, each with 4 ranked items.
    assert df["user_id"].unique(maintain_order=True).to_list() == [1, 99999999, 414, 88888888]
    assert df.group_by("user_id").len()["len"].to_list() == [4] * 4
    methods = dict(df.group_by("user_id").agg(pl.col("method").unique()).iter_rows())
    assert methods[1] == [model] and methods[414] == [model]
    assert methods[99999999] == ["popularity"] and methods[88888888] == ["popularity"]
    assert df["reason"].str.len_chars().min() > 0
    assert df.filter(pl.col("method") == model)["reason"].str.contains("because you liked").any()


def test_unknown_users_skipped_with_a_count(ml_store: MlStore, tmp_path: Path) -> None:
    ran = invoke(
        "recommend",
        "--model-dir",
        ml_store.model_dir,
        "--users-file",
        _batch_with_unknowns(tmp_path),
        "--model",
        "als",
        "-k",
        "3",
        "--unknown",
        "skip",
    )
    assert_ok(ran)
    assert "skipped 2 unknown user(s)" in ran.stderr
    df = read_csv_text(ran.stdout)
    assert df["user_id"].unique(maintain_order=True).to_list() == [1, 414]
    assert df.height == 6


def test_unknown_users_error_names_them(ml_store: MlStore, tmp_path: Path) -> None:
    ran = invoke(
        "recommend",
        "--model-dir",
        ml_store.model_dir,
        "--users-file",
        _batch_with_unknowns(tmp_path),
        "--model",
        "als",
        "--unknown",
        "error",
    )
    assert_error(ran, r"unknown user id.*99999999.*88888888")


def test_unknown_policy_must_be_valid(ml_store: MlStore) -> None:
    ran = invoke("recommend", "--model-dir", ml_store.model_dir, "--user", "1", "--unknown", "x")
    assert ran.code == 2
    assert "--unknown" in ran.stderr


def test_no_reasons_leaves_the_column_empty(ml_store: MlStore, tmp_path: Path) -> None:
    out = tmp_path / "recs.parquet"
    ran = invoke(
        "recommend",
        "--model-dir",
        ml_store.model_dir,
        "--all-users",
        "-k",
        "2",
        "--no-reasons",
        "--output",
        out,
    )
    assert_ok(ran)
    df = pl.read_parquet(out)
    assert df.columns == ["user_id", "item_id", "rank", "score", "method", "reason"]
    assert df.height == 609 * 2
    assert set(df["reason"].to_list()) == {""}


def test_unknown_item_for_similar(ml_store: MlStore) -> None:
    ran = invoke("similar", "--model-dir", ml_store.model_dir, "--item", "99999999", "-k", "5")
    assert_error(ran, r"unknown item id.*99999999")


@pytest.mark.parametrize("command", ["recommend", "similar"])
@pytest.mark.parametrize("k", ["0", "-3"])
def test_k_must_be_positive(syn_store: Path, command: str, k: str) -> None:
    query = ["--user", "1"] if command == "recommend" else ["--item", "1000"]
    ran = invoke(command, "--model-dir", syn_store, *query, "-k", k)
    assert_error(ran, rf"-?k must be a positive integer.*{re.escape(k)}")


def test_config_file_not_found(tmp_path: Path) -> None:
    ran = invoke("train", "--config", tmp_path / "nope.toml", "--model-dir", tmp_path / "m")
    assert_error(ran, r"nope\.toml.*not found")


@pytest.mark.parametrize(
    ("toml", "pattern"),
    [
        ("[models.als]\nfactorz = 3\n", r"models\.als\].*'factorz'"),
        ("[modelz.als]\nfactors = 3\n", r"modelz"),
        ("[data]\nsorce = 'files'\n", r"data\.sorce"),
    ],
)
def test_config_unknown_key(
    tmp_path: Path, syn_files: dict[str, Path], toml: str, pattern: str
) -> None:
    config = tmp_path / "typo.toml"
    config.write_text(toml, encoding="utf-8")
    model_dir = tmp_path / "m"
    args = ["--train", syn_files["train_csv"], "--model-dir", model_dir]
    assert_error(invoke("train", "--config", config, *args), pattern)
    assert not model_dir.exists() or not version_dirs(model_dir)


def test_config_unknown_model_lists_valid_models(
    tmp_path: Path, syn_files: dict[str, Path]
) -> None:
    config = tmp_path / "foo.toml"
    config.write_text("[models.foo]\n", encoding="utf-8")
    ran = invoke(
        "train", "--config", config, "--train", syn_files["train_csv"], "--model-dir", tmp_path
    )
    line = assert_error(ran, r"unknown model 'foo'")
    for name in ("popularity", "als", "itemknn", "ease"):
        assert name in line


def test_valid_without_train(tmp_path: Path, syn_files: dict[str, Path]) -> None:
    ran = invoke(
        "train",
        "--config",
        syn_files["config"],
        "--valid",
        syn_files["valid_csv"],
        "--model-dir",
        tmp_path / "m",
    )
    assert_error(ran, r"--valid needs --train")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("create", [True, False])
def test_recommend_without_a_trained_model(tmp_path: Path, create: bool) -> None:
    model_dir = tmp_path / "empty"
    if create:
        model_dir.mkdir()
    ran = invoke("recommend", "--model-dir", model_dir, "--user", "1", "-k", "3")
    assert_error(ran, r"empty.*no trained model")


def test_recommend_needs_exactly_one_source(syn_store: Path) -> None:
    ran = invoke("recommend", "--model-dir", syn_store, "-k", "3")
    assert_error(ran, r"exactly one of --user, --users-file or --all-users")


# --- 5. datasets --------------------------------------------------------------------------------


def test_datasets_list(data_home: Path) -> None:
    ran = run("datasets", "list", data_home=data_home)
    assert_ok(ran)
    for name in ("movielens-latest-small", "movielens-100k", "movielens-1m"):
        assert name in ran.stdout
    row = next(line for line in ran.stdout.splitlines() if "movielens-latest-small" in line)
    assert re.search(r"movielens-latest-small\W+yes\b", row), row


def test_datasets_info(data_home: Path) -> None:
    ran = run("datasets", "info", "movielens-latest-small", data_home=data_home)
    assert_ok(ran)
    info = json.loads(ran.stdout)
    assert info["name"] == "movielens-latest-small"
    assert info["present"] is True
    assert info["interactions"] == 100_836
    assert info["users"] == 610
    assert info["items"] == 9_742


def test_datasets_info_unknown_name() -> None:
    assert_error(invoke("datasets", "info", "movielens-2m"), r"'movielens-2m'.*movielens-1m")


# --- 6. --no-promote ----------------------------------------------------------------------------


def test_no_promote_adds_a_version_but_keeps_current(
    syn_store: Path, syn_files: dict[str, Path]
) -> None:
    before = current(syn_store)
    versions = version_dirs(syn_store)
    ran = invoke("train", "--config", syn_files["config"], "--model-dir", syn_store, "--no-promote")
    assert_ok(ran)
    assert "not promoted" in ran.stdout
    assert current(syn_store) == before
    added = version_dirs(syn_store) - versions
    assert len(added) == 1
    (new,) = added
    assert (syn_store / new / "manifest.json").is_file()
    assert temp_leftovers(syn_store) == []
    # The new version can still be read explicitly.
    ran = invoke("recommend", "--model-dir", syn_store, "--version", new, "--user", "1", "-k", "2")
    assert_ok(ran)
    assert read_csv_text(ran.stdout).height == 2


# --- 7. failed training leaves the store as it was ----------------------------------------------


def test_failed_training_on_bad_data_leaves_store_unchanged(
    syn_store: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,rating\n1,1000,5\n2,1001,five\n", encoding="utf-8")
    config = tmp_path / "bad.toml"
    config.write_text(
        '[data]\nsource = "files"\ninteractions = "bad.csv"\n' + SYN_MODEL_TABLES,
        encoding="utf-8",
    )
    before = store_state(syn_store)
    ran = invoke("train", "--config", config, "--model-dir", syn_store)
    assert_error(ran, r"bad\.csv.*line 3.*'five'")
    assert store_state(syn_store) == before
    assert temp_leftovers(syn_store) == []


def test_failure_while_writing_a_version_leaves_store_unchanged(
    syn_store: Path, syn_files: dict[str, Path], tmp_path: Path
) -> None:
    """The second model fails after the first was saved into the version being written."""
    config = tmp_path / "half.toml"
    config.write_text(
        '[data]\nsource = "files"\ninteractions = "train.csv"\n'
        "[models.popularity]\n[models.als]\nfactorz = 3\n",
        encoding="utf-8",
    )
    before = store_state(syn_store)
    ran = invoke("train", "--config", config, "--model-dir", syn_store, "--no-evaluate")
    assert_error(ran, r"factorz")
    assert store_state(syn_store) == before
    assert temp_leftovers(syn_store) == []
