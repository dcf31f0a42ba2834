"""The web UI through Streamlit's `AppTest`, against a real API on loopback.

One ``hybridrec serve`` process (SQLite event store) over a private copy of the shared
serving store: its two versions trained without evaluation, plus a third, evaluated one,
current, so the model page has metrics and a rollback has somewhere to go. Each test drives
the app script as a browser session would (`AppTest` runs it in this process; it reaches
the server over HTTP only) and checks what it shows against the API and the database.

The routes the UI added to the API (``/items``, ``/users``, ``/users/{id}/history``,
``/model``, ``/model/versions``, ``/admin/rollback``) are checked directly first. The
rollback tests come last: they change what the server serves.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from cli_helpers import assert_error, assert_ok, invoke
from streamlit.testing.v1 import AppTest

from hybridrec.bundle import ModelStore
from hybridrec.ui import APP

Server = Any  # conftest.Server, from the `launch` fixtures
STRATEGIES = ["auto", "hybrid", "als", "content", "two_tower", "ranked", "popular", "mixed"]
GENRE_OF = {0: "Rock", 1: "Jazz", 2: "Folk"}  # item 1000 + i has genre i % 3 (conftest)


def genre(item: int) -> str:
    return GENRE_OF[(item - 1000) % 3]


@pytest.fixture(scope="module")
def ui_store(
    serving_store: Path, serving_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The serving store's two versions, then a third trained with evaluation (current)."""
    store = tmp_path_factory.mktemp("ui") / "models"
    shutil.copytree(serving_store, store)
    assert_ok(invoke("train", "--config", serving_data / "serving.toml", "--model-dir", store))
    return store


@pytest.fixture(scope="module")
def api(
    ui_store: Path, tmp_path_factory: pytest.TempPathFactory, launch: Callable[..., Server]
) -> Iterator[Server]:
    # Tracking off in the server too: a rollback mirrors the store into MLflow otherwise.
    server = launch(
        ui_store, tmp_path_factory.mktemp("ui-api"), extra_env={"HYBRIDREC_TRACKING": "false"}
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def positives(serving_data: Path) -> pl.DataFrame:
    """The training rows the models learned from (ratings of 4 and more)."""
    return pl.read_csv(serving_data / "train.csv").filter(pl.col("rating") >= 4)


def get(server: Server, path: str, **params: Any) -> Any:
    with server.client() as c:
        r = c.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def feedback_rows(server: Server) -> list[tuple[str, str, str, str | None, str | None]]:
    """The feedback table of the server's SQLite event store."""
    with sqlite3.connect(server.log.parent / "events.db") as db:
        rows = db.execute(
            "SELECT user_id, item_id, value, source, model_version FROM feedback ORDER BY id"
        ).fetchall()
    return [tuple(r) for r in rows]


@pytest.fixture
def app(api: Server, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """A fresh browser session of the UI over `api`, after its first run."""
    monkeypatch.setenv("HYBRIDREC_API_URL", api.url)
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert not errors, errors
    return at


def pick_user(at: AppTest, user: object) -> AppTest:
    at.text_input(key="user_query").input(str(user))
    run(at)
    assert at.selectbox(key="user_pick").value == user
    return at


def cards(at: AppTest) -> list[dict[str, Any]]:
    """What each recommendation card shows, best first."""
    out = []
    for rank in range(1, 101):
        try:
            card = at.get_by_key(f"card-{rank}")
        except KeyError:
            break
        texts = [m.value for m in card.markdown]
        caption = card.caption[0].value
        out.append(
            {
                "title": texts[0],
                "item_id": int(caption.rsplit("item ", 1)[1]),
                "categories": caption.rsplit("  ·  item", 1)[0],
                "score_method": texts[1],
                "reasons": texts[2:],
            }
        )
    return out


def answer_line(at: AppTest) -> str:
    return str(at.get_by_key("answer").markdown[0].value)


# ---- the API routes the UI reads ----------------------------------------------------------------


def test_items_search_lookup_and_popular_first(api: Server, positives: pl.DataFrame) -> None:
    jazz = get(api, "/items", q="JAZZ", limit=200)
    assert jazz["total"] == 30 and len(jazz["items"]) == 30
    assert all("jazz" in i["title"] and i["categories"] == ["Jazz"] for i in jazz["items"])
    # The whole catalog, most popular first (users with a positive; unknown items last).
    users_of = dict(positives.group_by("item_id").agg(pl.col("user_id").n_unique()).iter_rows())
    every = get(api, "/items", limit=200)
    assert every["total"] == 90
    counts = [users_of.get(i["item_id"], 0) for i in every["items"]]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    page = get(api, "/items", limit=5, offset=5)["items"]
    assert [i["item_id"] for i in page] == [i["item_id"] for i in every["items"][5:10]]
    exact = get(api, "/items", id=["1003", "no-such", "1000"])
    assert [i["item_id"] for i in exact["items"]] == [1003, 1000]
    assert exact["missing"] == ["no-such"]
    with api.client() as c:
        bad = c.get("/items", params={"limit": 0})
    assert bad.status_code == 422 and "limit" in bad.text


def test_users_search_and_history(api: Server, positives: pl.DataFrame) -> None:
    found = get(api, "/users", q="3", limit=200)
    ids = [u["user_id"] for u in found["users"]]
    assert ids == sorted(ids) and ids[0] == 3 and found["total"] == len(ids)
    assert set(ids) == {u for u in positives["user_id"].unique() if "3" in str(u)}
    trained = positives.filter(pl.col("user_id") == 3)["item_id"].to_list()
    assert found["users"][0]["history_items"] == len(trained)
    history = get(api, "/users/3/history")
    assert history["known"] is True and history["total"] == len(trained)
    assert sorted(h["item_id"] for h in history["items"]) == sorted(trained)
    assert all(
        h["source"] == "training" and h["title"].endswith(str(h["item_id"]))
        for h in history["items"]
    )
    # A newcomer with one event has a history of one, online, and is not "known".
    with api.client() as c:
        assert c.get("/users/ui-newcomer/history").status_code == 404
        r = c.post(
            "/events", json={"user_id": "ui-newcomer", "item_id": 1004, "event_type": "click"}
        )
        assert r.status_code == 201, r.text
        missing = c.get("/users/nobody-at-all/history")
    assert missing.status_code == 404 and "unknown user" in missing.json()["detail"]
    newcomer = get(api, "/users/ui-newcomer/history")
    assert newcomer["known"] is False
    assert [(h["item_id"], h["source"]) for h in newcomer["items"]] == [(1004, "online")]


def test_model_info_and_versions(api: Server, ui_store: Path, positives: pl.DataFrame) -> None:
    health = get(api, "/health")
    info = get(api, "/model")
    assert info["version"] == health["model_version"] == (ui_store / "current").read_text().strip()
    assert info["evaluated"] is True and info["target"] == "ndcg@10" and not info["notes"]
    assert info["strategies"] == STRATEGIES
    assert info["similar_methods"] == ["cf", "content", "hybrid"]
    assert info["data"]["users"] == positives["user_id"].n_unique()
    assert info["data"]["items"] == positives["item_id"].n_unique()
    assert info["data"]["rows"] == positives.height
    manifest = json.loads((ui_store / info["version"] / "manifest.json").read_text())
    assert set(info["metrics"]) == set(manifest["metrics"]) >= {"als", "popularity"}
    als = info["metrics"]["als"]
    assert als["metrics"]["ndcg@10"] == pytest.approx(manifest["metrics"]["als"]["ndcg@10"])
    assert als["segments"]["warm"]["users"] > 0 and als["segments"]["warm"]["ndcg@10"] is not None
    assert als["segments"]["cold"]["ndcg@10"] is None  # no cold test users: no value, not NaN
    versions = get(api, "/model/versions")
    assert versions["served"] == versions["current"] == info["version"]
    rows = versions["versions"]
    assert [v["version"] for v in rows] == sorted(p.name for p in ui_store.iterdir() if p.is_dir())
    assert len(rows) == 3 and rows[-1]["current"] and rows[-1]["served"]
    assert rows[-1]["value"] == pytest.approx(
        manifest["metrics"][manifest["default_model"]]["ndcg@10"]
    )
    assert rows[0]["value"] is None and rows[1]["value"] is None  # trained --no-evaluate


def test_rollback_only_from_the_current_version_the_client_saw(api: Server, ui_store: Path) -> None:
    before = {p.name: p.read_text() for p in (ui_store / "current", ui_store / "history.json")}
    served = get(api, "/health")["model_version"]
    older = sorted(p.name for p in ui_store.iterdir() if p.is_dir())[0]
    with api.client() as c:
        assert c.post("/admin/rollback", json={"current": served}).status_code == 401
        wrong = c.post(
            "/admin/rollback", json={"current": served}, headers={"Authorization": "Bearer no"}
        )
        assert wrong.status_code == 403
    with api.admin() as admin:
        stale = admin.post("/admin/rollback", json={"current": older})
        missing = admin.post("/admin/rollback")
    # A page out of date (or a second click) takes the store back no further.
    assert stale.status_code == 409
    assert stale.json()["detail"].startswith(
        f"the store's current version is {served}, not {older}"
    )
    assert missing.status_code == 422
    after = {p.name: p.read_text() for p in (ui_store / "current", ui_store / "history.json")}
    assert after == before, "a refused rollback moves nothing"
    assert get(api, "/health")["model_version"] == served


def test_rollback_is_refused_on_a_pinned_server(
    ui_store: Path, tmp_path: Path, launch_temp: Callable[..., Server]
) -> None:
    pinned = (ui_store / "current").read_text().strip()
    before = (ui_store / "current").read_text()
    server = launch_temp(
        ui_store,
        tmp_path / "data",
        args=("--version", pinned),
        extra_env={"HYBRIDREC_TRACKING": "false"},
    )
    with server.admin() as admin:
        r = admin.post("/admin/rollback", json={"current": pinned})
    assert r.status_code == 409 and "pinned by --version" in r.json()["detail"]
    assert (ui_store / "current").read_text() == before, "a refused rollback moves nothing"


# ---- the UI: reaching the API -------------------------------------------------------------------


def test_an_unreachable_api_is_one_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once closed
    monkeypatch.setenv("HYBRIDREC_API_URL", url)
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    (error,) = at.sidebar.error
    assert "cannot be reached" in error.value and url in error.value
    assert "HYBRIDREC_API_URL" in error.value and "hybridrec serve" in error.value
    assert at.button(key="retry")
    assert not at.main.header, "no page is drawn without the API"


# ---- the UI: recommendations --------------------------------------------------------------------


def test_a_known_user_gets_cards_beside_their_history(
    app: AppTest, api: Server, positives: pl.DataFrame
) -> None:
    status = app.get_by_key("api-status").success[0].value
    assert get(api, "/health")["model_version"] in status
    pick_user(app, 3)
    shown = cards(app)
    assert len(shown) == 10 and app.number_input(key="k").value == 10
    body = get(api, "/recommend/user/3", k=10, strategy="auto")
    assert [c["item_id"] for c in shown] == [i["item_id"] for i in body["items"]]
    for card, item in zip(shown, body["items"], strict=True):
        assert card["title"] == f"**{item['rank']}. {item['title']}**"
        assert card["categories"] == genre(card["item_id"])
        assert f"method `{item['method']}`" in card["score_method"]
        assert card["reasons"] == [f"- {r}" for r in item["reasons"]] and card["reasons"]
    assert "for user 3" in answer_line(app) and f"`{body['method_used']}`" in answer_line(app)
    # The history beside it: the user's training items, with titles.
    history = app.get_by_key("history")
    assert history.subheader[0].value == "History of user 3"
    table = history.dataframe[0].value
    trained = positives.filter(pl.col("user_id") == 3)["item_id"].to_list()
    assert sorted(table["title"]) == sorted(f"{genre(i).lower()} album {i}" for i in trained)
    assert set(table["source"]) == {"training"}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_and_k(app: AppTest, api: Server, strategy: str) -> None:
    pick_user(app, 6)
    assert app.selectbox(key="strategy").options == STRATEGIES
    app.selectbox(key="strategy").select(strategy)
    app.number_input(key="k").set_value(4)
    run(app)
    body = get(api, "/recommend/user/6", k=4, strategy=strategy)
    assert [c["item_id"] for c in cards(app)] == [i["item_id"] for i in body["items"]]
    line = answer_line(app)
    assert f"strategy `{strategy}`" in line and f"answered by `{body['method_used']}`" in line
    sliders = [s for s in app.slider if s.key == "alpha"]
    assert bool(sliders) == (strategy == "mixed"), "alpha is mixed's own setting"
    if strategy == "mixed":
        assert sliders[0].value == 0.8
        sliders[0].set_value(0.0)
        run(app)
        popular = get(api, "/recommend/user/6", k=4, strategy="popular")
        assert [c["item_id"] for c in cards(app)] == [i["item_id"] for i in popular["items"]]


def test_an_unknown_user_is_answered_cold_start_and_says_so(app: AppTest) -> None:
    app.text_input(key="user_query").input("someone-new")
    run(app)
    assert any("No known user matches 'someone-new'" in w.value for w in app.warning)
    assert any("Cold start" in w.value for w in app.get_by_key("answer").warning)
    assert len(cards(app)) == 10
    assert all(c["score_method"].endswith("method `popularity`") for c in cards(app))
    (info,) = app.get_by_key("history").info
    assert "someone-new is unknown" in info.value and "no events since" in info.value


def test_thumbs_up_is_stored_and_the_next_list_shows_it(app: AppTest, api: Server) -> None:
    pick_user(app, 4)
    first = cards(app)[0]
    version = get(api, "/health")["model_version"]
    app.button(key="up-1").click()
    run(app)
    (flash,) = app.get_by_key("flash").success
    assert flash.value.startswith("Thumbs up on") and "stored (feedback #" in flash.value
    method = first["score_method"].rsplit("`", 2)[1]
    assert ("4", str(first["item_id"]), "up", method, version) in feedback_rows(api)
    # The next answer: the liked item is history now, so it is not recommended.
    assert first["item_id"] not in [c["item_id"] for c in cards(app)]
    top = app.get_by_key("history").dataframe[0].value.iloc[0]
    assert top["source"] == "online" and top["title"].endswith(str(first["item_id"]))
    assert app.get_by_key("history").dataframe[0].value["source"].tolist().count("online") == 1


def test_thumbs_down_is_never_recommended_again(app: AppTest, api: Server) -> None:
    pick_user(app, 7)
    second = cards(app)[1]
    app.button(key="down-2").click()
    run(app)
    assert app.get_by_key("flash").success[0].value.startswith("Thumbs down on")
    assert ("7", str(second["item_id"]), "down") in [r[:3] for r in feedback_rows(api)]
    for strategy in ("als", "popular"):
        app.selectbox(key="strategy").select(strategy)
        run(app)
        assert second["item_id"] not in [c["item_id"] for c in cards(app)], strategy
    disliked = app.get_by_key("history").caption[-1].value
    assert disliked.startswith("Disliked") and str(second["item_id"]) in disliked


def test_similar_items_side_by_side_and_closed(app: AppTest, api: Server) -> None:
    pick_user(app, 3)
    first = cards(app)[0]
    with pytest.raises(KeyError):
        app.get_by_key("similar-panel")
    app.button(key="similar-1").click()
    run(app)
    panel = app.get_by_key("similar-panel")
    assert str(first["item_id"]) in panel.subheader[0].value
    for method in ("cf", "content"):
        body = get(api, f"/similar/item/{first['item_id']}", method=method, k=5)
        side = app.get_by_key(f"similar-{method}")
        lines = [m.value for m in side.markdown][1:]
        assert len(lines) == len(body["items"]) == 5
        assert [int(line.split("(")[1].split(")")[0]) for line in lines] == [
            i["item_id"] for i in body["items"]
        ]
        assert side.caption[0].value == f"answered by {body['method_used']}"
    assert app.get_by_key("similar-content").caption[0].value == "answered by content"
    app.button(key="similar-close").click()
    run(app)
    with pytest.raises(KeyError):
        app.get_by_key("similar-panel")


def test_a_new_visitor_picks_items_and_gives_feedback(app: AppTest, api: Server) -> None:
    app.radio(key="who").set_value("New visitor")
    run(app)
    assert any("Cold start" in w.value for w in app.get_by_key("answer").warning)
    app.text_input(key="item_query").input("rock")
    run(app)
    assert app.get_by_key("item_matches").caption[0].value == "30 catalog items match 'rock'"
    picker = app.multiselect(key="visitor_items")
    assert picker.options and all(o.startswith("rock album") for o in picker.options)
    for option in picker.options[:3]:
        picker.select(option)
    run(app)
    picked = app.multiselect(key="visitor_items").value
    assert len(picked) == 3
    assert "for the visitor" in answer_line(app) and "3 history items used" in answer_line(app)
    shown = [c["item_id"] for c in cards(app)]
    assert not set(picked) & set(shown)
    assert sum(genre(i) == "Rock" for i in shown) >= 7, shown
    assert len(app.get_by_key("history").markdown) == 3
    # A thumbs up adds the item to what the visitor liked and is stored under their session id.
    liked = cards(app)[0]["item_id"]
    app.button(key="up-1").click()
    run(app)
    assert liked in app.multiselect(key="visitor_items").value
    assert "4 history items used" in answer_line(app)
    user, item, value = feedback_rows(api)[-1][:3]
    assert user.startswith("visitor-") and (item, value) == (str(liked), "up")
    # A thumbs down keeps the item out of the visitor's next answers.
    disliked = cards(app)[0]["item_id"]
    app.button(key="down-1").click()
    run(app)
    assert disliked not in [c["item_id"] for c in cards(app)]
    assert feedback_rows(api)[-1][:3] == (user, str(disliked), "down")


# ---- the UI: the model page and rollback (last: they change what is served) -------------------


def goto_model(app: AppTest) -> AppTest:
    app.radio(key="page").set_value("Model")
    return run(app)


def test_the_model_page_shows_the_version_metrics_and_segments(app: AppTest, api: Server) -> None:
    info = get(api, "/model")
    goto_model(app)
    assert app.header[0].value == f"Model version {info['version']}"
    metrics = {m.label: m.value for m in app.get_by_key("model-facts").metric}
    assert metrics["Training rows"] == f"{info['data']['rows']:,}"
    assert metrics["Training users"] == str(info["data"]["users"])
    assert metrics["Training items"] == str(info["data"]["items"])
    assert metrics["Created"] == info["created_at"][:10]
    facts = app.get_by_key("model-facts").caption[0].value
    assert f"created {info['created_at'][:19].replace('T', ' ')} UTC" in facts
    table = app.dataframe[0].value
    assert {m.removesuffix(" (default)") for m in table["model"]} == set(info["metrics"])
    assert table["ndcg@10"].tolist() == pytest.approx(
        [m["metrics"]["ndcg@10"] for m in info["metrics"].values()]
    )
    (chart,) = app.get_by_key("segment-chart").get("vega_lite_chart")
    spec = json.loads(chart.proto.spec)
    assert "ndcg@10" in json.dumps(spec) and "segment" in json.dumps(spec)
    versions = app.dataframe[1].value
    assert len(versions) == 3 and versions["served"].tolist() == ["✓", "", ""]
    assert app.button(key="rollback").disabled, "no token, no rollback"


def test_the_model_page_shows_the_ab_test_and_retraining_decisions(
    app: AppTest, api: Server, ui_store: Path
) -> None:
    goto_model(app)
    assert "No A/B test" in app.get_by_key("ab-test").caption[0].value
    assert "No retraining" in app.get_by_key("decisions").caption[0].value
    store = ModelStore(ui_store)
    older, current = store.versions()[0], store.current()
    decision = {
        "at": "2026-12-03T12:00:00+00:00",
        "decision": "rejected",
        "deployed": False,
        "candidate": older,
        "current": current,
        "candidate_metric": 0.101,
        "current_metric": 0.123,
        "reason": "not better: ndcg@10 0.1010 vs 0.1230",
    }
    store.record_decision(decision)
    assert_ok(invoke("ab", "start", "--model-dir", ui_store, "--b", older, "--share-b", "0.3"))
    try:
        run(app)
        caption = app.get_by_key("ab-test").caption[0].value
        assert caption.startswith("running")
        arms = app.get_by_key("ab-test").dataframe[0].value
        assert arms["arm"].tolist() == ["A", "B"]
        assert arms["serves"].tolist() == ["current", older]
        assert arms["share"].tolist() == ["70%", "30%"]
        report = get(api, "/model/ab")
        assert arms["users"].tolist() == [report["arms"][a]["users"] for a in ("A", "B")]
        lines = [m.value for m in app.get_by_key("ab-test").markdown]
        assert any(line.startswith("thumbs up / impression: B − A =") for line in lines)
        table = app.get_by_key("decisions").dataframe[0].value
        row = table.iloc[0]
        assert (row["decision"], row["candidate"], row["serving"]) == ("rejected", older, current)
        assert row["candidate metric"] == pytest.approx(0.101)
        assert row["reason"] == decision["reason"]
    finally:
        assert_ok(invoke("ab", "stop", "--model-dir", ui_store, "--keep", "A"))
    run(app)
    assert app.get_by_key("ab-test").caption[0].value.startswith("ended")


def test_rollback_needs_the_right_token_then_serves_the_previous_version(
    app: AppTest, api: Server, ui_store: Path, tmp_path: Path
) -> None:
    versions = [v["version"] for v in get(api, "/model/versions")["versions"]]
    # What `hybridrec bundle rollback` picks, on a copy of the store: the UI must do the same.
    oracle = shutil.copytree(ui_store, tmp_path / "oracle")
    assert_ok(invoke("bundle", "rollback", "--model-dir", oracle))
    target = (oracle / "current").read_text().strip()
    assert target != versions[-1]
    goto_model(app)
    app.text_input(key="admin_token").input("wrong")
    run(app)
    app.button(key="rollback").click()
    app.run()
    assert "Rollback refused: invalid bearer token" in app.error[0].value
    assert get(api, "/health")["model_version"] == versions[-1]
    app.text_input(key="admin_token").input(api.token)
    run(app)
    app.button(key="rollback").click()
    run(app)
    (done,) = [s.value for s in app.success if s.value.startswith("Rolled back")]
    assert f"from {versions[-1]}" in done and f"serving {target}" in done
    assert (ui_store / "current").read_text().strip() == target
    assert json.loads((ui_store / "history.json").read_text()) == json.loads(
        (oracle / "history.json").read_text()
    )
    assert get(api, "/health")["model_version"] == target
    # The page is the served version's now: trained without evaluation, so no metrics.
    assert app.header[0].value == f"Model version {target}"
    assert any("has no evaluation" in i.value for i in app.info)
    served = app.dataframe[0].value  # newest first
    assert served.loc[served["served"] == "✓", "version"].tolist() == [target]


# ---- packaging ----------------------------------------------------------------------------------


def test_the_ui_imports_no_model_code() -> None:
    code = (
        "import sys, hybridrec.ui, hybridrec.ui.client, hybridrec.ui.app\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('hybridrec.models', "
        "'hybridrec.bundle', 'hybridrec.serving', 'hybridrec.data')))\n"
        "print(bad)\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (("--port", "0"), r"--port must be 1-65535 \(got 0\)"),
        (("--api-url", "localhost:8000"), r"--api-url 'localhost:8000': give the API's http"),
    ],
)
def test_the_ui_command_refuses_bad_options(args: tuple[str, ...], pattern: str) -> None:
    assert_error(invoke("ui", *args), pattern)


def test_the_client_names_the_api_problem(api: Server) -> None:
    from hybridrec.ui.client import ApiClient, ApiError

    client = ApiClient(api.url)
    try:
        with pytest.raises(ApiError) as bad:
            client.recommend_user(3, k=0)
        assert bad.value.status == 422 and bad.value.detail.startswith("k: ")
        with pytest.raises(ApiError) as unknown:
            client.similar("no-such-item")
        assert unknown.value.status == 404 and "unknown item" in unknown.value.detail
        assert client.users("3")["users"][0]["user_id"] == 3
    finally:
        client.close()
