"""Users the model never saw get two-tower answers on every path, without retraining.

A newcomer with five item ids, and a visitor with attributes only (a segment, no item).

The Python API (`answer` over the bundle), ``hybridrec recommend --users-file`` and the
HTTP API (events posted for the user, and an anonymous ``POST /recommend``) all reach the
one answer path, and give the same items, all from the two-tower model, without retraining.
The store holds the ALS + two-tower ensemble beside them (the default config's blend).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from cli_helpers import FILES_PIPELINE
from starlette.testclient import TestClient
from typer.testing import CliRunner

from hybridrec.bundle import Bundle, ModelStore
from hybridrec.cli import app
from hybridrec.config import Settings
from hybridrec.data.synthetic import planted_clusters
from hybridrec.models.explain import answer
from hybridrec.serving.app import create_app

CLUSTERS, N_ITEMS = 3, 60
NEWCOMER = "tt-newcomer"
# Five items of cluster 1, none of them the newcomer's in any training data.
FIVE = [i for i in range(1000, 1000 + N_ITEMS) if (i - 1000) % CLUSTERS == 1][:5]
CONFIG = (
    FILES_PIPELINE.replace('items = "items.csv"', 'items = "items.csv"\nusers = "users.csv"')
    + """

[models.als]
factors = 16
iterations = 10

[models.two_tower]
epochs = 6
min_epochs = 6
tower_dims = [32]
output_dim = 32
show_progress = false
seed = 3

[models.ensemble]
model = "hybrid"
components = { als = 0.6, two_tower = 0.4 }
normalization = "zscore"
"""
)
ENV = {"HYBRIDREC_MODEL_DIR": None, "OPENBLAS_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("two-tower-paths")
    events = planted_clusters(n_users=150, n_items=N_ITEMS, n_clusters=CLUSTERS, seed=5)
    events.select("user_id", "item_id", "timestamp").write_csv(root / "train.csv")
    ids = sorted(set(events["item_id"].to_list()))
    genres = ("Space", "Romance", "Horror")
    pl.DataFrame(
        {
            "item_id": ids,
            "title": [f"{genres[(i - 1000) % CLUSTERS]} film {i}" for i in ids],
            "categories": [genres[(i - 1000) % CLUSTERS] for i in ids],
        }
    ).write_csv(root / "items.csv")
    # Each user's segment is their cluster: what a user tower can learn from attributes.
    uids = sorted(set(events["user_id"].to_list()))
    pl.DataFrame({"user_id": uids, "segment": [f"c{(u - 1) % CLUSTERS}" for u in uids]}).write_csv(
        root / "users.csv"
    )
    (root / "tt.toml").write_text(CONFIG, encoding="utf-8")
    model_dir = root / "models"
    ran = CliRunner().invoke(
        app,
        [
            "train",
            "--config",
            str(root / "tt.toml"),
            "--model-dir",
            str(model_dir),
            "--no-evaluate",
        ],
        env=ENV,
    )
    assert ran.exit_code == 0, ran.stdout + ran.stderr
    return model_dir


def python_answer(store: Path) -> list[tuple[int, str]]:
    bundle = Bundle.open(store / ModelStore(store).current())
    assert bundle.get("ensemble") is not None  # the blend is stored beside its parts
    (got,) = answer(
        bundle.get,
        [NEWCOMER],
        5,
        strategy="two_tower",
        history={NEWCOMER: FIVE},
        items_table=bundle.items,
    )
    assert got.history_items == 5 and not got.cold_start
    return list(zip(got.items, got.methods, strict=True))


def cli_answer(store: Path, tmp: Path) -> list[tuple[int, str]]:
    source = tmp / "newcomer.csv"
    pl.DataFrame({"user_id": [NEWCOMER] * 5, "item_id": FIVE}).write_csv(source)
    args = ["recommend", "--model-dir", str(store), "--users-file", str(source), "-k", "5"]
    ran = CliRunner().invoke(app, [*args, "--strategy", "two_tower"], env=ENV)
    assert ran.exit_code == 0, ran.stdout + ran.stderr
    rows = pl.read_csv(ran.stdout.encode()).sort("rank")
    return list(zip(rows["item_id"].to_list(), rows["method"].to_list(), strict=True))


def api_answers(store: Path, tmp: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    settings = Settings(model_dir=store, data_dir=tmp, database_url=f"sqlite:///{tmp}/events.db")
    with TestClient(create_app(settings)) as client:
        for item in FIVE:
            r = client.post(
                "/events", json={"user_id": NEWCOMER, "item_id": item, "event_type": "view"}
            )
            assert r.status_code == 201, r.text
        known = client.get(
            f"/recommend/user/{NEWCOMER}", params={"strategy": "two_tower", "k": 5}
        ).json()
        visitor = client.post(
            "/recommend", json={"item_ids": FIVE, "strategy": "two_tower", "k": 5}
        ).json()
    for body in (known, visitor):
        assert body["method_used"] == "two_tower", body
        assert body["history_items"] == 5 and body["cold_start"] is False, body
    return (
        [(i["item_id"], i["method"]) for i in known["items"]],
        [(i["item_id"], i["method"]) for i in visitor["items"]],
    )


def test_newcomer_with_five_items_gets_two_tower_answers_everywhere(
    store: Path, tmp_path: Path
) -> None:
    py = python_answer(store)
    cli = cli_answer(store, tmp_path)
    api_user, api_visitor = api_answers(store, tmp_path)
    assert len(py) == 5 and {m for _, m in py} == {"two_tower"}
    assert cli == py
    assert api_user == py
    assert api_visitor == py
    items = np.asarray([i for i, _ in py])
    assert not set(items.tolist()) & set(FIVE)
    # Personalized: mostly the newcomer's cluster, not the most popular items.
    assert np.mean((items - 1000) % CLUSTERS == 1) >= 0.6, py


PROFILED = "tt-profiled"
PROFILE = {"segment": "c2"}


def test_visitor_with_attributes_only_gets_two_tower_answers_everywhere(
    store: Path, tmp_path: Path
) -> None:
    bundle = Bundle.open(store / ModelStore(store).current())
    (got,) = answer(
        bundle.get, [PROFILED], 5, attributes={PROFILED: PROFILE}, items_table=bundle.items
    )
    py = list(zip(got.items, got.methods, strict=True))
    assert len(py) == 5 and {m for _, m in py} == {"two_tower"}, (py, got.notes)
    assert not got.cold_start
    assert all(r[0].kind == "profile" and "segment c2" in r[0].text for r in got.reasons)
    items = np.asarray(got.items)
    assert np.mean((items - 1000) % CLUSTERS == 2) >= 0.6, py
    # Without the attributes: the cold-start path (popularity).
    (plain,) = answer(bundle.get, [PROFILED], 5, items_table=bundle.items)
    assert plain.cold_start and len(plain.items) == 5 and plain.items != got.items

    source = tmp_path / "profiled.csv"
    pl.DataFrame({"user_id": [PROFILED], **{k: [v] for k, v in PROFILE.items()}}).write_csv(source)
    args = ["recommend", "--model-dir", str(store), "--users-file", str(source), "-k", "5"]
    for extra in ([], ["--model", "two_tower"]):
        ran = CliRunner().invoke(app, [*args, *extra], env=ENV)
        assert ran.exit_code == 0, ran.stdout + ran.stderr
        rows = pl.read_csv(ran.stdout.encode()).sort("rank")
        assert list(zip(rows["item_id"], rows["method"], strict=True)) == py, extra

    settings = Settings(
        model_dir=store, data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/events.db"
    )
    with TestClient(create_app(settings)) as client:
        body = client.post("/recommend", json={"attributes": PROFILE, "k": 5}).json()
        bare = client.post("/recommend", json={"k": 5}).json()
    assert body["method_used"] == "two_tower" and body["cold_start"] is False, body
    assert [(i["item_id"], i["method"]) for i in body["items"]] == py
    assert bare["cold_start"] is True and len(bare["items"]) == 5


def test_the_api_lists_the_attributes_and_the_ui_sends_them(
    store: Path, tmp_path: Path, launch_temp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET /model says what a visitor may send; the UI's new visitor picks it and is answered."""
    from streamlit.testing.v1 import AppTest

    from hybridrec.ui import APP

    server = launch_temp(store, tmp_path / "api")
    with server.client() as client:
        info = client.get("/model").json()
        want = client.post("/recommend", json={"attributes": PROFILE, "k": 10}).json()
    segment = {"name": "segment", "kind": "categorical", "values": ["c0", "c1", "c2"]}
    assert info["user_attributes"] == [{**segment, "models": ["two_tower"]}]
    assert want["method_used"] == "two_tower"

    monkeypatch.setenv("HYBRIDREC_API_URL", server.url)
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.radio(key="who").set_value("New visitor").run()
    assert not at.exception, at.exception
    assert "cold start" in " ".join(w.value for w in at.warning).lower()  # nothing given yet
    at.selectbox(key="attr_segment").set_value(PROFILE["segment"]).run()
    assert not at.exception and not at.error, (at.exception, at.error)
    line = str(at.get_by_key("answer").markdown[0].value)
    assert "answered by `two_tower`" in line, line
    shown = [
        int(str(at.get_by_key(f"card-{rank}").caption[0].value).rsplit("item ", 1)[1])
        for rank in range(1, len(want["items"]) + 1)
    ]
    assert shown == [i["item_id"] for i in want["items"]]
    assert not at.warning  # personal results: no cold-start warning
