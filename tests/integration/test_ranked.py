"""The two-stage ranker through the one answer path: CLI, API and the compatibility route.

The routed store (`routed_store`) holds a ranker over ALS, item-kNN, content and popularity
(two-tower, absent from that pipeline, is left out of its retrievers).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import assert_ok, invoke, read_csv_text

KNOWN = 9


@pytest.fixture(scope="module")
def ranked_server(
    routed_store: Path, tmp_path_factory: pytest.TempPathFactory, launch: Callable[..., Any]
) -> Iterator[Any]:
    server = launch(routed_store, tmp_path_factory.mktemp("ranked-data"))
    try:
        yield server
    finally:
        server.stop()


def _manifest(store: Path) -> dict[str, Any]:
    version = (store / "current").read_text(encoding="utf-8").strip()
    found = json.loads((store / version / "manifest.json").read_text(encoding="utf-8"))
    return dict(found)


def test_the_stored_ranker_kept_its_present_retrievers_and_importance(routed_store):
    info = _manifest(routed_store)["models"]["ranked"]
    assert set(info["params"]["retrievers"]) == {"als", "itemknn", "content", "popularity"}
    importance = info["feature_importance"]
    assert importance and abs(sum(importance.values()) - 1.0) < 1e-3
    assert any(name.startswith(("als_", "itemknn_", "content_")) for name in importance)
    assert info["training"]["label_users"] > 0


def test_ranked_strategy_is_answered_by_the_ranker_in_cli_and_api(routed_store, ranked_server):
    ran = invoke(
        "recommend", "--model-dir", routed_store, "--user", str(KNOWN), "-k", "8",
        "--strategy", "ranked",
    )  # fmt: skip
    assert_ok(ran)
    cli = read_csv_text(ran.stdout)
    assert cli.height == 8
    assert set(cli["method"].to_list()) == {"ranked"}
    with ranked_server.client() as c:
        r = c.get(f"/recommend/user/{KNOWN}", params={"k": 8, "strategy": "ranked"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method_used"] == "ranked"
    assert [str(i["item_id"]) for i in body["items"]] == [str(i) for i in cli["item_id"]]
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_compatibility_route_answers_in_the_old_envelope(ranked_server):
    with ranked_server.client() as c:
        r = c.get(f"/api/predictions/user/{KNOWN}", params={"limit": 5})
        plain = c.get(f"/recommend/user/{KNOWN}", params={"k": 5, "strategy": "ranked"})
        unknown = c.get("/api/predictions/user/nobody-at-all", params={"limit": 3})
        bad = c.get(f"/api/predictions/user/{KNOWN}", params={"limit": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    predictions = body["data"]["predictions"]
    assert len(predictions) == 5
    assert all(set(p) == {"productId", "productName", "score"} for p in predictions)
    want = plain.json()["items"]
    assert [str(p["productId"]) for p in predictions] == [str(i["item_id"]) for i in want]
    assert [p["productName"] for p in predictions] == [i["title"] for i in want]
    # A user the model does not know still gets an answer (the cold-start path).
    assert unknown.status_code == 200 and len(unknown.json()["data"]["predictions"]) == 3
    assert bad.status_code == 422
