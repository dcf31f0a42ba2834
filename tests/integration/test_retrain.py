"""Retraining end to end: a real server, its event store, the CLI, kills, MLflow.

The feedback that should help: thumbs up (``POST /feedback``) on two held-out positives of
two thirds of the users of `serving_data`, then their other held-out positives as views
(``POST /events``), later in time: the views are the newest interactions the serving
version never saw, so they are the holdout, and the thumbs are what the candidate learns
from. A candidate made worse on purpose (ALS with 2 factors and 1 iteration) must then be
rejected with its reason and both figures recorded.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import random
import re
import signal
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from cli_helpers import (
    FILES_PIPELINE,
    Ran,
    assert_error,
    assert_ok,
    current,
    invoke,
    run,
    synthetic_ratings,
    temp_leftovers,
)
from retrain_child import killable_round
from rich.console import Console

from conftest import ADMIN_TOKEN, SERVING_CONFIG, PgSchemas, Server, copy_store
from hybridrec.bundle import ModelStore, open_bundle
from hybridrec.data.synthetic import planted_clusters
from hybridrec.errors import IntegrityError
from hybridrec.pipeline import retrain as retrain_module
from hybridrec.pipeline import train as train_module
from hybridrec.pipeline.retrain import load_events, retrain_lock
from hybridrec.serving.events import EventRow, EventStore, FeedbackRow, database_url

NO_TRACKING = {"HYBRIDREC_TRACKING": "false"}
#: Thumbs up an hour ago, views a minute ago: all newer than the training data.
NOW = time.time()
LIKED_AT, VIEWED_AT = NOW - 3600, NOW - 60


def _plan() -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(user, item) thumbs up and views: held-out positives of users not divisible by 3."""
    _, held_out = synthetic_ratings()
    pos = (
        held_out.filter((pl.col("rating") >= 4.0) & (pl.col("user_id") % 3 != 0))
        .sort("user_id", "item_id")
        .with_columns(rank=pl.int_range(pl.len()).over("user_id"))
    )
    likes = pos.filter(pl.col("rank") < 2).select("user_id", "item_id").rows()
    views = pos.filter(pl.col("rank") >= 2).select("user_id", "item_id").rows()
    return likes, views


LIKES, VIEWS = _plan()
#: The views are the holdout (the newest the serving version has not seen).
RETRAIN = f"\n[retrain]\nholdout_size = {len(VIEWS)}\nmin_users = 20\n"
WORSE = FILES_PIPELINE + "\n[models.als]\nfactors = 2\niterations = 1\nrandom_state = 1\n"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def post_feedback(server: Server) -> None:
    """The plan through the API: thumbs up one by one, then the views as one batch."""
    with server.client() as client:
        for user, item in LIKES:
            body = {"user_id": user, "item_id": item, "value": "up", "timestamp": _iso(LIKED_AT)}
            assert client.post("/feedback", json=body).status_code == 201
        views = [
            {"user_id": u, "item_id": i, "event_type": "view", "timestamp": _iso(VIEWED_AT)}
            for u, i in VIEWS
        ]
        r = client.post("/events", json=views)
        assert r.status_code == 201, r.text


def store_feedback(url: str) -> None:
    """The plan written straight into an event store, as the service writes it."""
    store = EventStore(url)
    try:
        for user, item in LIKES:
            row = FeedbackRow(str(user), str(item), "up", "als", None, LIKED_AT, LIKED_AT)
            store.add_feedback(row, EventRow(str(user), str(item), "like", 2.0, LIKED_AT, NOW))
        store.add_events([EventRow(str(u), str(i), "view", 1.0, VIEWED_AT, NOW) for u, i in VIEWS])
    finally:
        store.dispose()


@pytest.fixture(scope="module")
def base_store(serving_data: Path) -> Path:
    """A store with one version of `SERVING_CONFIG` + `RETRAIN` (its config stored in it)."""
    config = serving_data / "retrain.toml"
    config.write_text(SERVING_CONFIG + RETRAIN, encoding="utf-8")
    (serving_data / "retrain-worse.toml").write_text(WORSE + RETRAIN, encoding="utf-8")
    model_dir = serving_data / "retrain-models"
    assert_ok(invoke("train", "--config", config, "--model-dir", model_dir, "--no-evaluate"))
    return model_dir


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The data directory (event store, MLflow) of the CLI run in this process."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("HYBRIDREC_DATA_DIR", str(data_dir))
    monkeypatch.delenv("HYBRIDREC_DATABASE_URL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return data_dir


def _version(server: Server) -> str | None:
    with server.client() as client:
        version: str | None = client.get("/health").json()["model_version"]
        return version


def _training_weight(model_dir: Path, version: str, user: int, item: int) -> float:
    users, items, matrix = open_bundle(model_dir, version).model()._fitted()
    row = users.index([user], missing="mask")[0]
    col = items.index([item], missing="mask")[0]
    return float(matrix.tocsr()[row, col]) if row >= 0 and col >= 0 else 0.0


# ---- the acceptance test --------------------------------------------------------------------


def test_feedback_that_helps_is_deployed_and_served_and_a_worse_candidate_is_not(
    base_store: Path,
    serving_data: Path,
    tmp_path: Path,
    env: Path,
    launch_temp: Callable[..., Server],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model_dir = copy_store(base_store, tmp_path / "models")
    first = current(model_dir)
    server = launch_temp(model_dir, env, extra_env=NO_TRACKING)
    post_feedback(server)

    # No --config: the serving version's own (with its [retrain] section).
    monkeypatch.setenv("HYBRIDREC_ADMIN_TOKEN", ADMIN_TOKEN)
    ran = invoke("retrain", "--once", "--model-dir", model_dir, "--reload-url", server.url)
    assert_ok(ran)
    second = current(model_dir)
    assert second != first
    assert f"deployed {second}: better: ndcg@10 " in ran.stdout
    assert _version(server) == second  # reloaded before the command returned
    store = ModelStore(model_dir)
    deployed = store.decisions()[-1]
    assert deployed["decision"] == "deployed" and deployed["deployed"] is True
    assert (deployed["candidate"], deployed["current"]) == (second, first)
    assert deployed["candidate_metric"] >= deployed["current_metric"] * 1.01
    assert deployed["interval"]["low"] > 0
    assert deployed["holdout"] == {"rows": len(VIEWS), "users": len({u for u, _ in VIEWS})}
    assert deployed["data"]["thumbs_up"] == len(LIKES)
    assert deployed["data"]["events"] == len(VIEWS)
    # Deployed is what was measured: trained on the thumbs (weight 2, a new pair), not on
    # the held-out views.
    liked, viewed = LIKES[0], VIEWS[0]
    assert _training_weight(model_dir, second, *liked) == 2.0
    assert _training_weight(model_dir, first, *liked) == 0.0
    assert _training_weight(model_dir, second, *viewed) == 0.0
    with server.client() as client:
        r = client.get(f"/recommend/user/{liked[0]}", params={"k": 5})
        assert r.status_code == 200, r.text

    # Made worse on purpose, tracked in a real MLflow store (SQLite in the data dir).
    monkeypatch.setenv("HYBRIDREC_TRACKING", "true")
    worse = serving_data / "retrain-worse.toml"
    ran = invoke("retrain", "--once", "--config", worse, "--model-dir", model_dir)
    assert_ok(ran)
    third = store.versions()[-1]
    assert third not in (first, second)
    assert current(model_dir) == second
    assert f"kept {second}: not better: ndcg@10 " in ran.stdout
    rejected = store.decisions()[-1]
    assert rejected["decision"] == "rejected" and rejected["deployed"] is False
    assert (rejected["candidate"], rejected["current"]) == (third, second)
    assert rejected["candidate_metric"] < rejected["current_metric"]
    assert rejected["interval"]["high"] < 0
    for figure in (rejected["candidate_metric"], rejected["current_metric"]):
        assert f"{figure:.4f}" in rejected["reason"]
    lo, hi = rejected["interval"]["low"], rejected["interval"]["high"]
    assert f"[{lo:+.4f}, {hi:+.4f}]" in rejected["reason"]
    time.sleep(1.5)  # three sync periods of the server: it would have followed a promotion
    assert _version(server) == second
    # The service (and the web UI's model page) lists both decisions, newest first.
    with server.client() as client:
        listed = client.get("/model/decisions", params={"limit": 2}).json()["decisions"]
        assert client.get("/model/decisions", params={"limit": 0}).status_code == 400
    assert listed == [rejected, deployed]
    _check_mlflow(env, rejected, champion=second, challenger=third)


def _check_mlflow(data_dir: Path, decision: dict[str, Any], champion: str, challenger: str) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("hybridrec")
    assert experiment is not None
    [retrain_run] = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`hybridrec.kind` = 'retrain'"
    )
    tags, metrics = retrain_run.data.tags, retrain_run.data.metrics
    assert tags["retrain.decision"] == "rejected"
    assert tags["retrain.reason"] == decision["reason"]
    assert tags["retrain.candidate_version"] == challenger
    assert tags["retrain.current_version"] == champion
    assert metrics["retrain/deployed"] == 0.0
    assert metrics["retrain/candidate_ndcg_at_10"] == pytest.approx(decision["candidate_metric"])
    assert metrics["retrain/current_ndcg_at_10"] == pytest.approx(decision["current_metric"])
    assert metrics["retrain/diff_low"] == pytest.approx(decision["interval"]["low"])
    assert retrain_run.data.params["retrain.min_improve"] == "0.01"
    for alias, version in (("champion", champion), ("challenger", challenger)):
        mv = client.get_model_version_by_alias("hybridrec", alias)
        assert mv.tags["bundle_version"] == version, alias


# ---- on a schedule beside the server --------------------------------------------------------


def _retrainers(server_pid: int) -> list[int]:
    """Processes running ``retrain --every`` beside the server ``server_pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--beside-server" in args and str(server_pid).encode() in args:
            found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie no longer does; this container's init may not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_serve_retrains_on_a_schedule_without_holding_requests_up_and_stops_with_it(
    base_store: Path, tmp_path: Path, launch_temp: Callable[..., Server]
) -> None:
    model_dir = copy_store(base_store, tmp_path / "models")
    data_dir = tmp_path / "data"
    first = current(model_dir)
    store_feedback(database_url(None, data_dir))
    server = launch_temp(model_dir, data_dir, extra_env=NO_TRACKING, args=("--retrain-every", "2s"))
    children = _retrainers(server.proc.pid)
    assert len(children) == 1, (children, server.logs())
    [child] = children
    latencies = []
    deadline = time.monotonic() + 90
    with server.client() as client:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            r = client.get("/health")
            latencies.append(time.perf_counter() - start)
            assert r.status_code == 200
            if r.json()["model_version"] != first:
                break
            time.sleep(0.05)
    served = _version(server)
    assert served != first, server.logs()
    assert served == current(model_dir)
    deployed = [d for d in ModelStore(model_dir).decisions() if d["decision"] == "deployed"]
    assert deployed and deployed[0]["candidate"] == served, server.logs()
    # Training ran in a process of its own: requests kept being answered meanwhile.
    assert statistics.median(latencies) < 0.5, latencies
    assert "retraining every 2s beside the server" in server.logs()
    server.stop()
    deadline = time.monotonic() + 15
    while _retrainers(server.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _retrainers(server.proc.pid), server.logs()
    assert not _running(child)


# ---- kills ----------------------------------------------------------------------------------

KILL_CONFIG = """
[data]
source = "files"
interactions = "train.csv"

[models.popularity]

[models.als]
factors = 16
iterations = 10
random_state = 1

[models.itemknn]
neighbors = 20

[retrain]
min_users = 20
# Many resamples: the evaluation phase lasts long enough to be hit.
bootstrap_samples = 100000
"""
PHASES = ("evaluation", "training", "saving")
#: Kills wanted in each phase (12 in all), and the most rounds tried to land them.
KILLS_PER_PHASE = 4
MAX_ROUNDS = 30


@pytest.fixture(scope="module")
def forkserver() -> multiprocessing.context.ForkServerContext:
    """Children forked from a server that imported the retraining code once.

    Each round then starts in milliseconds instead of the seconds an interpreter takes to
    import numpy, polars and implicit; the kills still hit real, separate processes.
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(
        ["hybridrec.pipeline.retrain", "hybridrec.serving.events", "implicit.cpu.als", "alembic"]
    )
    return ctx


def _phase_of(log: Path, model_dir: Path, pid: int) -> str:
    """Where a killed round was, from its progress lines and what it left in the store."""
    text = log.read_text(encoding="utf-8") if log.exists() else ""
    if "retrain: kept" in text:
        return "finished"
    if "retrain: scoring" in text or "written (not current)" in text:
        return "evaluation"
    if any(p.name.startswith(f".tmp-{pid}-") for p in model_dir.iterdir()):
        return "saving"
    return "training" if "training the candidate" in text else "before training"


class Round:
    """A round in a forkserver child, watched: the time each phase started."""

    def __init__(self, ctx: Any, model_dir: Path, data_dir: Path, log: Path) -> None:
        self.model_dir, self.log = model_dir, log
        self.proc = ctx.Process(
            target=killable_round, args=(str(model_dir), str(data_dir), str(log))
        )
        self.started: dict[str, float] = {}
        self.t0 = 0.0

    def now(self) -> float:
        """Seconds since the child started."""
        return time.perf_counter() - self.t0

    def watch(self, until: Callable[[Round], bool] = lambda _: False) -> None:
        """Note phase starts every millisecond until the child ends or ``until`` holds."""
        self.t0 = time.perf_counter()
        self.proc.start()
        markers = {"training": "training the candidate", "evaluation": "retrain: scoring"}
        while self.proc.is_alive() and not until(self):
            now = self.now()
            text = self.log.read_text(encoding="utf-8") if self.log.exists() else ""
            for phase, marker in markers.items():
                if marker in text:
                    self.started.setdefault(phase, now)
            if "written (not current)" in text:
                self.started.setdefault("written", now)
            if "retrain: kept" in text:
                self.started.setdefault("end", now)
            if "saving" not in self.started and any(
                p.name.startswith(f".tmp-{self.proc.pid}-") for p in self.model_dir.iterdir()
            ):
                self.started["saving"] = now
            time.sleep(0.001)


def test_kills_at_random_points_leave_the_served_version_and_current_untouched(
    tmp_path: Path,
    launch_temp: Callable[..., Server],
    forkserver: multiprocessing.context.ForkServerContext,
) -> None:
    root = tmp_path
    df = planted_clusters(n_users=600, n_items=200, n_clusters=5, per_user=30, seed=1)
    df = df.with_columns(pos=pl.int_range(pl.len()).over("user_id"))
    df.filter(pl.col("pos") < 24).drop("pos").write_csv(root / "train.csv")
    (root / "kill.toml").write_text(KILL_CONFIG, encoding="utf-8")
    model_dir, data_dir = root / "models", root / "data"
    assert_ok(
        invoke("train", "--config", root / "kill.toml", "--model-dir", model_dir, "--no-evaluate")
    )
    first = current(model_dir)
    server = launch_temp(model_dir, data_dir, extra_env=NO_TRACKING)
    new = df.filter(pl.col("pos") >= 24).select("user_id", "item_id").rows()
    with server.client() as client:
        for start in range(0, len(new), 1000):
            batch = [
                {"user_id": u, "item_id": i, "timestamp": _iso(NOW - 600 + n)}
                for n, (u, i) in enumerate(new[start : start + 1000], start)
            ]
            assert client.post("/events", json=batch).status_code == 201

    # Rounds to the end: how long each phase lasts here, now (the first one also pays for
    # what the child imports and reads for the first time).
    for n in range(2):
        calibration = Round(forkserver, model_dir, data_dir, root / f"calibration-{n}.log")
        calibration.watch()
        assert calibration.proc.exitcode == 0, calibration.log.read_text(encoding="utf-8")
    s = calibration.started
    assert set(s) >= {*PHASES, "written", "end"}, s
    lasts = {
        "training": s["saving"] - s["training"],
        "saving": s["written"] - s["saving"],
        "evaluation": s["end"] - s["evaluation"],
    }

    # Kill rounds until each phase has been hit KILLS_PER_PHASE times. A round that ends
    # before its kill (a phase shorter here and now than in calibration) is not a kill: it
    # halves that phase's delay range and the phase is tried again, up to MAX_ROUNDS.
    rng = random.Random(20)
    landed: dict[str, int] = {}
    scale = dict.fromkeys(PHASES, 0.7)
    kills = 0
    for n in range(MAX_ROUNDS):
        wanted = [p for p in PHASES if landed.get(p, 0) < KILLS_PER_PHASE]
        if not wanted:
            break
        phase = wanted[n % len(wanted)]
        delay = rng.uniform(0, scale[phase] * lasts[phase])
        watched = Round(forkserver, model_dir, data_dir, root / f"kill-{n}.log")

        def due(r: Round, phase: str = phase, delay: float = delay) -> bool:
            at = r.started.get(phase)
            return at is not None and r.now() >= at + delay

        watched.watch(until=due)
        if watched.proc.is_alive():
            os.kill(watched.proc.pid, signal.SIGKILL)
        watched.proc.join()
        if watched.proc.exitcode == -signal.SIGKILL:
            kills += 1
            where = _phase_of(watched.log, model_dir, watched.proc.pid)
            landed[where] = landed.get(where, 0) + 1
        else:
            scale[phase] /= 2
        assert current(model_dir) == first
        assert ModelStore(model_dir).history() == [first]
    assert kills >= 10, landed
    assert all(landed.get(p, 0) >= 2 for p in PHASES), landed
    assert _version(server) == first

    # The lock died with its holders, and the next round removes what a kill left half
    # written (each kill "saving" left one; each round removes those before its own).
    final = Round(forkserver, model_dir, data_dir, root / "final.log")
    final.watch()
    assert final.proc.exitcode == 0, final.log.read_text(encoding="utf-8")
    assert temp_leftovers(model_dir) == []
    assert current(model_dir) == first
    assert ModelStore(model_dir).decisions()[-1]["decision"] == "rejected"
    assert _version(server) == first


# ---- failures -------------------------------------------------------------------------------


def assert_round_failed(ran: Ran, pattern: str) -> None:
    """Exit code 2 and, after the round's progress lines, one ``error: ...`` line, the last."""
    assert "Traceback" not in ran.stderr, ran.stderr
    assert ran.code == 2, f"exit {ran.code}\nstdout:\n{ran.stdout}\nstderr:\n{ran.stderr}"
    lines = [line for line in ran.stderr.splitlines() if line.strip()]
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], ran.stderr
    assert re.search(pattern, lines[-1]), f"{pattern!r} not in {lines[-1]!r}"


def test_a_full_disk_while_saving_the_candidate_changes_nothing_served(
    base_store: Path, tmp_path: Path, env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = copy_store(base_store, tmp_path / "models")
    store_feedback(database_url(None, env))
    before = (current(model_dir), ModelStore(model_dir).versions())

    def full_disk(path: Path, *args: Any, **kwargs: Any) -> dict[str, Any]:
        (path / "cf.joblib").write_bytes(b"\0" * 1024)  # part of it made it to disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(train_module, "write_bundle", full_disk)
    ran = invoke("retrain", "--once", "--model-dir", model_dir)
    assert_round_failed(ran, r"^error: OSError: \[Errno 28\] No space left on device$")
    assert (current(model_dir), ModelStore(model_dir).versions()) == before
    assert temp_leftovers(model_dir) == []
    failed = ModelStore(model_dir).decisions()[-1]
    assert failed["decision"] == "failed" and failed["candidate"] is None
    assert failed["reason"].startswith("training the candidate failed: OSError: ")
    assert failed["current"] == before[0]


def test_a_failed_evaluation_keeps_the_serving_version(
    base_store: Path, tmp_path: Path, env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = copy_store(base_store, tmp_path / "models")
    store_feedback(database_url(None, env))
    first = current(model_dir)

    def corrupt(*args: Any, **kwargs: Any) -> Any:
        raise IntegrityError("cf.joblib: BLAKE3 does not match the manifest")

    monkeypatch.setattr(retrain_module, "evaluate_fitted", corrupt)
    ran = invoke("retrain", "--once", "--model-dir", model_dir)
    assert_round_failed(ran, r"^error: cf\.joblib: BLAKE3 does not match the manifest$")
    store = ModelStore(model_dir)
    candidate = store.versions()[-1]
    assert candidate != first and current(model_dir) == first
    failed = store.decisions()[-1]
    assert failed["decision"] == "failed"
    assert failed["reason"].startswith("evaluating failed: IntegrityError: ")
    assert (failed["candidate"], failed["current"]) == (candidate, first)


# ---- PostgreSQL event store -----------------------------------------------------------------


def test_feedback_in_postgresql_is_retrained_on(
    base_store: Path, tmp_path: Path, env: Path, pg_schemas: PgSchemas
) -> None:
    url = pg_schemas.new("retrain")
    model_dir = copy_store(base_store, tmp_path / "models")
    first = current(model_dir)
    store_feedback(url)
    store = EventStore(url)
    try:
        store.add_events([EventRow("1", "1001", "dislike", 0.0, NOW, NOW)])
    finally:
        store.dispose()
    events = load_events(url)
    assert events.height == len(LIKES) + len(VIEWS) + 1
    assert events["user_id"].dtype == pl.Int64
    assert events["event_type"].to_list()[-1] == "dislike"  # in arrival order
    ran = invoke("retrain", "--once", "--model-dir", model_dir, "--database-url", url)
    assert_ok(ran)
    decision = ModelStore(model_dir).decisions()[-1]
    assert decision["data"]["thumbs_up"] == len(LIKES)
    assert decision["data"]["thumbs_down"] == 1
    assert decision["decision"] == "deployed", decision["reason"]
    assert current(model_dir) != first


# ---- what the command refuses ---------------------------------------------------------------


@pytest.fixture
def refusals(base_store: Path, tmp_path: Path, env: Path) -> Iterator[Path]:
    model_dir = copy_store(base_store, tmp_path / "models")
    yield model_dir
    assert current(model_dir) == current(base_store)


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (("--every", "6x"), r"--every '6x': give a number and a unit, s, m, h or d"),
        (("--every", "0m"), r"--every '0m': must be longer than zero"),
        ((), r"give --once, or --every DURATION \(or set HYBRIDREC_RETRAIN_EVERY\)"),
        (("--once", "--every", "1h"), r"give --once or --every, not both"),
        (("--once", "--min-improve", "-1"), r"min_improve must be a number >= 0"),
        (("--once", "--reload-url", "http://127.0.0.1:9"), r"needs the server's HYBRIDREC_ADMIN"),
    ],
)
def test_bad_retrain_arguments_are_one_line_errors(
    refusals: Path, args: tuple[str, ...], pattern: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HYBRIDREC_RETRAIN_EVERY", raising=False)
    monkeypatch.delenv("HYBRIDREC_ADMIN_TOKEN", raising=False)
    assert_error(invoke("retrain", "--model-dir", refusals, *args), pattern)


def test_a_target_that_is_not_per_user_is_refused_before_training(
    refusals: Path, serving_data: Path
) -> None:
    config = serving_data / "retrain-coverage.toml"
    config.write_text(SERVING_CONFIG + '\n[evaluation]\ntarget = "coverage@10"\n', "utf-8")
    versions = ModelStore(refusals).versions()
    ran = invoke("retrain", "--once", "--model-dir", refusals, "--config", config)
    assert_error(ran, r"target 'coverage@10': retraining compares the versions user by user")
    assert ModelStore(refusals).versions() == versions


def test_without_a_current_version_the_config_must_be_given(tmp_path: Path, env: Path) -> None:
    ran = invoke("retrain", "--once", "--model-dir", tmp_path / "empty")
    assert_error(ran, r"no current version to take the pipeline config from; give --config")


def test_a_second_retrain_of_a_store_is_refused_while_one_runs(refusals: Path) -> None:
    with retrain_lock(refusals):
        ran = run("retrain", "--once", "--model-dir", refusals)
    assert_error(ran, rf"another retrain of this store is running \(pid {os.getpid()} since ")


@pytest.mark.parametrize(
    ("args", "env_vars", "pattern"),
    [
        (("--retrain-every", "soon"), {}, r"--retrain-every 'soon': give a number and a unit"),
        (("--retrain-every", "1h", "--version", "x"), {}, r"pinned with --version never serves"),
        (("--retrain-every", "1h"), {"HYBRIDREC_SYNC_SECONDS": "0"}, r"SYNC_SECONDS > 0"),
    ],
)
def test_serve_refuses_a_schedule_it_could_not_serve(
    refusals: Path,
    args: tuple[str, ...],
    env_vars: dict[str, str],
    pattern: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in env_vars.items():
        monkeypatch.setenv(key, value)
    assert_error(invoke("serve", "--model-dir", refusals, *args), pattern)


def test_the_schedule_survives_a_failing_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """A round that fails or finds the lock taken is reported; the next one still runs."""
    outcomes: list[Exception | None] = [
        retrain_module.RetrainBusyError("busy"),
        OSError("disk"),
        None,
    ]
    calls: list[int] = []
    stop = threading.Event()

    def round_() -> None:
        calls.append(1)
        outcome = outcomes[len(calls) - 1]
        if len(calls) == len(outcomes):
            stop.set()
        if outcome is not None:
            raise outcome

    console = Console(record=True, width=200)
    retrain_module.run_every(0.01, round_, console=console, stop=stop)
    said = console.export_text()
    assert len(calls) == 3
    assert "retrain: skipped: busy" in said and "retrain: failed: OSError: disk" in said
