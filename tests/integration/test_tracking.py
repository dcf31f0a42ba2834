"""MLflow tracking and registry against real stores: SQLite, PostgreSQL and a real ``mlflow ui``.

The CLI runs in-process (`invoke`) on synthetic ratings in a temp folder; the local store
lives in the data directory (``HYBRIDREC_DATA_DIR``), also in the temp folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_helpers import (
    SEARCH_CONFIG,
    Ran,
    assert_ok,
    free_port,
    invoke,
    synthetic_ratings,
    write_table,
)

from hybridrec.bundle import ModelStore
from hybridrec.tracking.registry import registered_versions

MLFLOW = Path(sys.executable).parent / "mlflow"


@dataclass
class Local:
    """A store with two tracked versions (the second current) and its local MLflow store."""

    root: Path
    model_dir: Path
    uri: str
    versions: list[str]
    ui: subprocess.Popen[bytes] | None = None
    ui_url: str = ""

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def train(self) -> str:
        ran = train(self.root)
        assert "MLflow: train run" in ran.stderr, ran.stderr
        return ModelStore(self.model_dir).versions()[-1]


def champion(client: Any) -> str:
    """The bundle version the registry's ``champion`` alias points at."""
    return str(client.get_model_version_by_alias("hybridrec", "champion").tags["bundle_version"])


def _files(root: Path) -> Path:
    ratings, held_out = synthetic_ratings()
    write_table(ratings, root / "train.csv")
    write_table(held_out, root / "test.csv")
    (root / "cfg.toml").write_text(SEARCH_CONFIG, encoding="utf-8")
    return root


def train(root: Path, *args: str) -> Ran:
    """``train`` of `SEARCH_CONFIG` on the ratings of `_files` into ``root/models``."""
    ran = invoke(
        "train", "--config", root / "cfg.toml", "--train", root / "train.csv",
        "--model-dir", root / "models", *args,
    )  # fmt: skip
    assert_ok(ran)
    return ran


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`_files` in ``tmp_path``, tracking on, the data directory (local store) beside them."""
    monkeypatch.setenv("HYBRIDREC_TRACKING", "true")
    monkeypatch.setenv("HYBRIDREC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return _files(tmp_path)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    root = _files(tmp_path_factory.mktemp("tracking"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYBRIDREC_TRACKING", "true")
        mp.setenv("HYBRIDREC_DATA_DIR", str(root / "data"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        uri = f"sqlite:///{root / 'data' / 'mlflow' / 'mlflow.db'}"
        store = Local(root, root / "models", uri, [])
        store.versions = [store.train()]
        # `mlflow ui` takes half a minute to start on 2 cores: it does while the rest runs.
        start_ui(store)
        try:
            store.versions.append(store.train())
            yield store
        finally:
            stop_ui(store)


def start_ui(local: Local) -> None:
    """The README's ``mlflow ui`` on a free loopback port, over the local store."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # One worker and no job runner: their defaults (4 workers, 7 job processes) only slow
    # the start on 2 cores.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    with (local.root / "mlflow-ui.log").open("wb") as fh:
        local.ui = subprocess.Popen(
            [str(MLFLOW), "ui", "--backend-store-uri", local.uri, "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=local.root,
            start_new_session=True,
        )  # fmt: skip
    local.ui_url = f"http://127.0.0.1:{port}"


def stop_ui(local: Local) -> None:
    if local.ui is None or local.ui.poll() is not None:
        return
    os.killpg(local.ui.pid, signal.SIGTERM)
    try:
        local.ui.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(local.ui.pid, signal.SIGKILL)
        local.ui.wait()


def test_a_train_run_has_params_metrics_tags_artifacts_and_the_champion(local: Local) -> None:
    client = local.client()
    experiment = client.get_experiment_by_name("hybridrec")
    runs = client.search_runs(
        [experiment.experiment_id], "tags.`hybridrec.kind` = 'train'", order_by=["start_time"]
    )
    assert [r.data.tags["bundle_version"] for r in runs] == local.versions
    run = runs[-1]
    assert run.info.status == "FINISHED"
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    # The whole resolved config, flattened, and what tuning chose.
    assert params["models.als.params.factors"] == "16"
    assert params["tuning.trials"] == "4"
    assert params["tracking.experiment"] == "hybridrec"
    assert "chosen.als.factors" in params
    # Every metric at every K, overall and by segment, with the seconds.
    for model in ("popularity", "als", "itemknn"):
        for k in (10, 20):
            assert f"{model}/ndcg_at_{k}" in metrics
            assert f"{model}/hot/recall_at_{k}" in metrics
        assert {f"{model}/fit_seconds", f"{model}/eval_seconds"} <= set(metrics)
    manifest = ModelStore(local.model_dir).manifest(local.versions[-1])
    assert tags["data.hash"] == manifest["data"]["hash"]
    assert tags["code_version"] == manifest["code_version"]
    assert tags["default_model"] == manifest["default_model"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"bundle", "reports.json"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "bundle")] == [
        "bundle/manifest.json"
    ]
    # Each search trial is a nested run: 4 for ALS, 4 for item-kNN.
    trials = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert sorted(t.data.tags["hybridrec.model"] for t in trials) == ["als"] * 4 + ["itemknn"] * 4
    assert all("ndcg_at_10" in t.data.metrics for t in trials)
    # Each version is a model version linked to its run; the current one is the champion.
    version = client.get_model_version_by_alias("hybridrec", "champion")
    assert version.tags["bundle_version"] == local.versions[-1]
    assert version.run_id == run.info.run_id
    assert float(version.tags["ndcg_at_10"]) == pytest.approx(
        manifest["metrics"][manifest["default_model"]]["ndcg@10"], rel=1e-5
    )
    assert len(client.search_model_versions("name = 'hybridrec'")) == 2


def test_promote_and_rollback_move_the_champion(local: Local) -> None:
    client = local.client()
    first, second = local.versions
    assert champion(client) == second
    assert_ok(invoke("bundle", "rollback", "--model-dir", local.model_dir))
    assert champion(client) == first
    assert_ok(invoke("bundle", "promote", second, "--model-dir", local.model_dir))
    assert champion(client) == second


def test_pruned_versions_leave_the_registry(root: Path) -> None:
    (root / "small.toml").write_text(
        "[models.popularity]\n[models.als]\nfactors = 8\niterations = 3\n", encoding="utf-8"
    )
    for _ in range(3):
        trained = invoke(
            "train", "--config", root / "small.toml", "--train", root / "train.csv",
            "--model-dir", root / "models", "--no-evaluate",
        )  # fmt: skip
        assert_ok(trained)
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'data' / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    store_root = str((root / "models").resolve())
    versions = ModelStore(root / "models").versions()
    assert set(registered_versions(client, "hybridrec", store_root)) == set(versions)
    ran = invoke("bundle", "prune", "--keep", "1", "--model-dir", root / "models")
    assert_ok(ran)
    left = ModelStore(root / "models").versions()
    assert len(left) == 2 and versions[0] not in left
    assert set(registered_versions(client, "hybridrec", store_root)) == set(left)
    assert champion(client) == left[-1]
    assert "pruned version(s) deleted" in ran.stderr


def test_a_tune_is_one_parent_run_with_its_trials_nested(local: Local) -> None:
    output = local.root / "best.toml"
    ran = invoke(
        "tune", "--config", local.root / "cfg.toml", "--train", local.root / "train.csv",
        "--trials", "3", "--output", output,
    )  # fmt: skip
    assert_ok(ran)
    client = local.client()
    experiment = client.get_experiment_by_name("hybridrec")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`hybridrec.kind` = 'tune'")
    assert parent.data.params["models.als.params.factors"] == "16"
    assert "als/ndcg_at_10" in parent.data.metrics
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == [
        "best.toml",
        "reports.json",
    ]
    trials = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(trials) == 6  # 3 per searched model (--trials overrides the config's 4)
    assert {t.data.tags["hybridrec.kind"] for t in trials} == {"trial"}
    assert f"with 6 nested trials in {local.uri}" in ran.stderr


def test_an_evaluate_run_has_the_metrics_the_data_and_the_plot(local: Local) -> None:
    plot = local.root / "chart.png"
    ran = invoke(
        "evaluate", "--config", local.root / "cfg.toml", "--train", local.root / "train.csv",
        "--test", local.root / "test.csv", "--format", "json", "--plot", plot,
    )  # fmt: skip
    assert_ok(ran)
    assert "itemknn" in json.loads(ran.stdout)  # the MLflow lines go to stderr
    client = local.client()
    experiment = client.get_experiment_by_name("hybridrec")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`hybridrec.kind` = 'evaluate'")
    assert "itemknn/warm/ndcg_at_20" in run.data.metrics
    assert {"data.train.hash", "data.test.hash", "data.test.rows"} <= set(run.data.tags)
    assert run.data.params["models.itemknn.params.neighbors"] == "20"
    assert "plots/chart.png" in {a.path for a in client.list_artifacts(run.info.run_id, "plots")}


def test_the_mlflow_ui_finds_the_runs_through_its_rest_api(local: Local) -> None:
    assert local.ui is not None
    log = local.root / "mlflow-ui.log"
    with httpx.Client(base_url=local.ui_url, timeout=10) as http:
        deadline = time.monotonic() + 120
        while True:
            assert local.ui.poll() is None, log.read_text(errors="replace")
            try:
                if http.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.3)
        experiment = http.get(
            "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": "hybridrec"}
        ).json()["experiment"]
        found = http.post(
            "/api/2.0/mlflow/runs/search",
            json={
                "experiment_ids": [experiment["experiment_id"]],
                "filter": f"tags.bundle_version = '{local.versions[-1]}'",
            },
        ).json()["runs"]
        assert [r["info"]["run_name"] for r in found] == [f"train {local.versions[-1]}"]
        run_id = found[0]["info"]["run_id"]
        listed = http.get("/api/2.0/mlflow/artifacts/list", params={"run_id": run_id}).json()
        assert {"bundle", "reports.json"} <= {f["path"] for f in listed["files"]}
        alias = http.get(
            "/api/2.0/mlflow/registered-models/alias",
            params={"name": "hybridrec", "alias": "champion"},
        ).json()["model_version"]
        assert alias["run_id"] == run_id
        page = http.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()


def test_an_unreachable_tracking_server_costs_one_warning_line(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    start = time.perf_counter()
    ran = train(root)
    assert time.perf_counter() - start < 60
    store = ModelStore(root / "models")
    assert store.current() == store.versions()[0]
    assert "(current)" in ran.stdout
    warned = [line for line in ran.stderr.splitlines() if "MLflow" in line]
    assert len(warned) == 1, ran.stderr
    assert warned[0].startswith("warning: MLflow tracking off for this run")
    # Promoting (a registry sync) with the server still down: one line too, and it works.
    ran = invoke("bundle", "promote", store.versions()[0], "--model-dir", root / "models")
    assert_ok(ran)
    assert len([line for line in ran.stderr.splitlines() if "MLflow" in line]) == 1
    # The next tracked command with a reachable store registers the version it missed.
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert_ok(invoke("bundle", "promote", store.versions()[0], "--model-dir", root / "models"))
    from mlflow import MlflowClient

    uri = f"sqlite:///{root / 'data' / 'mlflow' / 'mlflow.db'}"
    assert champion(MlflowClient(tracking_uri=uri, registry_uri=uri)) == store.versions()[0]


def test_without_mlflow_training_works_and_says_once_that_tracking_is_off(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hybridrec.tracking.client as tracking_client

    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    monkeypatch.setattr(tracking_client, "_SAID", set())
    ran = train(root)
    assert ModelStore(root / "models").current() is not None
    said = [line for line in ran.stderr.splitlines() if "MLflow" in line]
    assert said == [
        "MLflow tracking is off: mlflow is not installed (pip install 'hybridrec[track]')"
    ]
    assert not (root / "data").exists()


def test_a_postgresql_backend_holds_the_run_and_the_champion(
    root: Path, monkeypatch: pytest.MonkeyPatch, pg_schemas: Any
) -> None:
    # A fresh schema per run (dropped at the end), given as postgresql:// (psycopg 3).
    url = pg_schemas.new("mlflow").replace("postgresql+psycopg://", "postgresql://")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    ran = train(root, "--no-evaluate")
    assert "MLflow: train run" in ran.stderr, ran.stderr
    from mlflow import MlflowClient

    pg = url.replace("postgresql://", "postgresql+psycopg://")
    client = MlflowClient(tracking_uri=pg, registry_uri=pg)
    experiment = client.get_experiment_by_name("hybridrec")
    (run,) = client.search_runs([experiment.experiment_id])
    version = ModelStore(root / "models").current()
    assert run.data.tags["bundle_version"] == version
    assert run.data.params["models.als.params.factors"] == "16"
    assert champion(client) == version
    # Artifacts of a database store stay in the data directory, not the working directory.
    assert (root / "data" / "mlflow" / "artifacts").is_dir()
