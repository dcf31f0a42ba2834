"""A Spark-trained ALS through the whole stack: serving, batch scoring on Spark, bundle import.

The same small pipeline (synthetic ratings in three clusters, the serving tests' catalog) is
trained twice through the CLI, with ``backend = "implicit"`` and ``backend = "spark"``
(``local[2]``); each store is served by a real server, and the two must answer alike: the
same fields and methods for a known user, a visitor folded in from history and an unknown
user. ``recommend --all-users --engine spark`` must give the in-process batch's rows, and
its output must import as a bundle's precomputed recommendations.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from cli_helpers import (
    FILES_PIPELINE,
    HYBRIDREC,
    _env,
    assert_error,
    assert_ok,
    invoke,
    run,
    synthetic_ratings,
    write_table,
)

from conftest import Server

pytestmark = pytest.mark.slow

HOT_USER = 3  # 26 training items, cluster (3 - 1) % 3 = 2
CLUSTER = {c: [i for i in range(1000, 1090) if (i - 1000) % 3 == c] for c in range(3)}
ALS_PARAMS = """
[models.als]
factors = 16
iterations = 8
regularization = 2.0
alpha = 3.0
random_state = 1
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("spark-serving")
    train, _ = synthetic_ratings()
    write_table(train, root / "train.csv")
    ids = list(range(1000, 1090))
    pl.DataFrame(
        {
            "item_id": ids,
            "title": [f"album {i}" for i in ids],
            "categories": [("Rock", "Jazz", "Folk")[(i - 1000) % 3] for i in ids],
        }
    ).write_csv(root / "items.csv")
    return root


def _train(data: Path, backend: str) -> Path:
    config = data / f"{backend}.toml"
    extra = 'backend = "spark"\nmaster = "local[2]"\n' if backend == "spark" else ""
    config.write_text(FILES_PIPELINE + ALS_PARAMS + extra, encoding="utf-8")
    model_dir = data / f"models-{backend}"
    # A real process: Spark's JVM starts and stops with the command, as for a user.
    ran = run("train", "--config", config, "--model-dir", model_dir, "--no-evaluate", cwd=data)
    assert_ok(ran)
    return model_dir


@pytest.fixture(scope="module")
def stores(data: Path) -> dict[str, Path]:
    return {backend: _train(data, backend) for backend in ("implicit", "spark")}


@pytest.fixture(scope="module")
def servers(
    stores: dict[str, Path], data: Path, launch: Callable[..., Server]
) -> Iterator[dict[str, Server]]:
    started = {name: launch(path, data / f"serve-{name}") for name, path in stores.items()}
    yield started
    for server in started.values():
        server.stop()


def _shape(value: Any) -> Any:
    """The fields of a JSON value, recursively (list: the shape of its first element)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


def _answers(server: Server) -> dict[str, dict[str, Any]]:
    with server.client() as c:
        known = c.get(f"/recommend/user/{HOT_USER}", params={"k": 5, "strategy": "als"})
        visitor = c.post("/recommend", json={"item_ids": CLUSTER[0][:4], "k": 5})
        unknown = c.get("/recommend/user/someone-new", params={"k": 4, "strategy": "als"})
    for r in (known, visitor, unknown):
        assert r.status_code == 200, r.text
    return {"known": known.json(), "visitor": visitor.json(), "unknown": unknown.json()}


def _items(body: dict[str, Any]) -> list[Any]:
    return [i["item_id"] for i in body["items"]]


def test_the_manifest_records_the_backend(stores: dict[str, Path]) -> None:
    for backend, model_dir in stores.items():
        version = (model_dir / "current").read_text(encoding="utf-8").strip()
        manifest = json.loads((model_dir / version / "manifest.json").read_text("utf-8"))
        assert manifest["models"]["als"]["params"]["backend"] == backend


def test_a_spark_bundle_serves_as_an_implicit_one(servers: dict[str, Server]) -> None:
    got = {name: _answers(server) for name, server in servers.items()}
    implicit, spark = got["implicit"], got["spark"]
    for case in ("known", "visitor", "unknown"):
        a, b = implicit[case], spark[case]
        a_shape, b_shape = _shape(a), _shape(b)
        a_shape.pop("model_version"), b_shape.pop("model_version")
        assert a_shape == b_shape, case
        for key in ("method_used", "cold_start", "history_items", "user_id"):
            assert a[key] == b[key], (case, key, a[key], b[key])
        assert [i["method"] for i in a["items"]] == [i["method"] for i in b["items"]], case
    for body in (implicit, spark):
        known, visitor, unknown = body["known"], body["visitor"], body["unknown"]
        assert known["method_used"] == "als" and len(known["items"]) == 5
        assert sum(i in CLUSTER[2] for i in _items(known)) >= 4, _items(known)
        # The visitor's history (cluster 0) is folded in against the item factors.
        assert visitor["method_used"] == "als" and visitor["history_items"] == 4
        assert not set(CLUSTER[0][:4]) & set(_items(visitor))
        assert sum(i in CLUSTER[0] for i in _items(visitor)) >= 4, _items(visitor)
        assert unknown["cold_start"] is True
        assert unknown["method_used"] == "cold_start:popular"


def _batch(model_dir: Path, out: Path, engine: str) -> pl.DataFrame:
    ran = run(
        "recommend",
        "--model-dir",
        model_dir,
        "--all-users",
        "--model",
        "als",
        "-k",
        "6",
        "--engine",
        engine,
        "--output",
        out,
    )
    assert_ok(ran)
    return pl.read_parquet(out)


def test_spark_batch_equals_the_in_process_batch_and_imports_as_precomputed(
    stores: dict[str, Path], data: Path, tmp_path: Path
) -> None:
    model_dir = stores["spark"]
    local = _batch(model_dir, tmp_path / "local.parquet", "local")
    spark = _batch(model_dir, tmp_path / "recs.parquet", "spark")
    columns = ["user_id", "item_id", "rank", "score", "method", "reason"]
    assert spark.columns == local.columns == columns
    assert spark.schema == local.schema
    assert (
        spark["user_id"].unique(maintain_order=True).to_list()
        == local["user_id"].unique(maintain_order=True).to_list()
    )
    np.testing.assert_allclose(spark["score"].to_numpy(), local["score"].to_numpy(), rtol=1e-5)
    sets = {
        name: dict(frame.group_by("user_id").agg(pl.col("item_id")).iter_rows())
        for name, frame in (("local", local), ("spark", spark))
    }
    differ = [u for u in sets["local"] if set(sets["local"][u]) != set(sets["spark"][u])]
    assert len(differ) <= len(sets["local"]) // 20, differ
    # Reasons are computed the same way for both engines.
    both = local.join(spark, on=["user_id", "item_id"], suffix="_spark")
    assert both.height > 0.9 * local.height
    assert (both["reason"] == both["reason_spark"]).all()
    assert (spark["method"] == "als").all() and (spark["reason"] != "").all()
    # Exclude-seen holds on Spark.
    train = pl.read_csv(data / "train.csv")
    assert spark.join(train, on=["user_id", "item_id"], how="semi").height == 0

    # The Spark output beside Spark-style factor exports imports as precomputed lists.
    from hybridrec.pipeline.artifacts import load_pipeline

    als = load_pipeline(model_dir).model("als")
    users, items, _ = als._fitted()
    loose = tmp_path / "loose"
    loose.mkdir()
    for name, vocab, factors in (
        ("user", users, als.user_factors_),  # type: ignore[attr-defined]
        ("item", items, als.item_factors_),  # type: ignore[attr-defined]
    ):
        pl.DataFrame({"id": vocab.ids, "features": np.asarray(factors).tolist()}).write_parquet(
            loose / f"{name}_factors.parquet"
        )
    # One user's list is rewritten, so the test can tell the stored lists from the factors.
    seen = set(train.filter(pl.col("user_id") == HOT_USER)["item_id"].to_list())
    mine = [i for i in items.ids.tolist() if i not in seen][-6:]
    recs = spark.filter(pl.col("user_id") != HOT_USER)
    planted = pl.DataFrame(
        {
            "user_id": [HOT_USER] * 6,
            "item_id": mine,
            "rank": list(range(1, 7)),
            "score": [float(6 - r) for r in range(6)],
            "method": ["als"] * 6,
            "reason": [""] * 6,
        }
    ).cast(recs.schema)  # type: ignore[arg-type]
    pl.concat([recs, planted]).write_parquet(loose / "recommendations.parquet")
    train.write_csv(loose / "interactions.csv")
    imported = tmp_path / "imported"
    ran = invoke("bundle", "import", loose, "--model-dir", imported)
    assert_ok(ran)
    assert f"recommendations.parquet ({spark.height} rows)" in ran.stderr
    bundle = load_pipeline(imported)
    assert bundle.top_n is not None and bundle.top_n.model == "als"
    top = bundle.recommend([HOT_USER, 1], 6)
    assert top.row(0)[0].tolist() == mine
    first = spark.filter(pl.col("user_id") == 1).sort("rank")["item_id"].to_list()
    assert top.row(1)[0].tolist() == first


def test_spark_engine_errors_are_one_line(stores: dict[str, Path], tmp_path: Path) -> None:
    args = ["recommend", "--model-dir", stores["implicit"], "--all-users", "--engine", "spark"]
    assert_error(invoke(*args, "--model", "popularity"), "Spark engine scores ALS models only")
    assert_error(invoke(*args, "--strategy", "als"), "--engine spark scores one --model")
    # An implicit-trained ALS takes SPARK_MASTER: a bad one is a clear error, not a trace.
    proc = subprocess.run(
        [str(HYBRIDREC), *map(str, args), "--model", "als", "-o", tmp_path / "r.parquet"],
        capture_output=True,
        text=True,
        env=_env() | {"SPARK_MASTER": "nowhere://x"},
        timeout=240,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "master 'nowhere://x' is not a Spark master URL" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "r.parquet").exists()
