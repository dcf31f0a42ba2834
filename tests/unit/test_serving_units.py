"""The serving library without HTTP: strategies, online history, the event store, catalog."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from hybridrec.bundle import Bundle, ModelStore, write_bundle
from hybridrec.data.dataset import InteractionData
from hybridrec.errors import UnknownIdError
from hybridrec.models import Recommender, create_model
from hybridrec.models.explain import Rules
from hybridrec.models.explain import answer as explain_answer
from hybridrec.serving import strategies
from hybridrec.serving.catalog import Catalog
from hybridrec.serving.events import (
    DatabaseUnavailableError,
    EventRow,
    EventStore,
    StoredEvent,
    database_url,
)
from hybridrec.serving.online import OnlineHistory
from hybridrec.serving.service import ModelService
from hybridrec.serving.strategies import COLD_START, Strategy, recommend, similar

PARAMS: dict[str, dict[str, Any]] = {
    "popularity": {},
    "als": {"factors": 16, "iterations": 10, "use_gpu": False, "random_state": 0},
    "itemknn": {"neighbors": 20},
}


@pytest.fixture(scope="module")
def models(planted_data: InteractionData) -> dict[str, Recommender]:
    return {name: create_model(name, p).fit(planted_data) for name, p in PARAMS.items()}


@pytest.fixture(scope="module")
def bundle(models: dict[str, Recommender], tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return Bundle.from_models(tmp_path_factory.mktemp("b"), models, default_model="als")


def only(models: dict[str, Recommender], *names: str) -> Bundle:
    picked = {n: models[n] for n in names}
    return Bundle.from_models(Path("/nonexistent"), picked, default_model=names[0])


def item_ids(ans: strategies.Answer) -> list[Any]:
    return [i.item_id for i in ans.items]


# ---- strategies: the service's translation to the library's one answer path ------------------


def test_als_answers_a_known_user_as_the_library_does(bundle: Bundle) -> None:
    ans = recommend(bundle, "1", 5, Strategy.als)
    assert ans.method_used == "als" and not ans.fallback and not ans.cold_start
    expected, _ = bundle.model("als").recommend([1], 5).row(0)
    assert item_ids(ans) == expected.tolist()
    assert all(i.method == "als" and i.reasons for i in ans.items)
    lib = explain_answer(bundle.get, [1], 5, strategy="als", items_table=bundle.items)[0]
    assert [[r.text for r in rs] for rs in lib.reasons] == [list(i.reasons) for i in ans.items]
    # The whole training history counts, not only the online part.
    assert ans.history_items == bundle.model("als").user_items_[0].nnz > 0  # type: ignore[index]
    bare = recommend(bundle, "1", 5, Strategy.als, explain=False)
    assert item_ids(bare) == item_ids(ans) and all(i.reasons == () for i in bare.items)


def test_unknown_user_without_history_is_cold_start(bundle: Bundle) -> None:
    for strategy in Strategy:
        ans = recommend(bundle, "nobody", 4, strategy)
        assert ans.cold_start and ans.method_used == COLD_START, strategy
        assert ans.history_items == 0
        assert all(i.method == "popularity" for i in ans.items)
        assert all(i.reasons[-1] == "popular overall" for i in ans.items)
        assert not any("because you liked" in r for i in ans.items for r in i.reasons)
    top, _ = bundle.model("popularity").recommend(["x"], 4, history={"x": []}).row(0)
    assert item_ids(recommend(bundle, "nobody", 4)) == top.tolist()


def test_history_folds_in_and_is_excluded(bundle: Bundle, planted_spec: Any) -> None:
    cluster = planted_spec.items_of_cluster(1)
    history = {str(i): 1.0 for i in cluster[:4]}
    ans = recommend(bundle, "newcomer", 6, Strategy.als, history=history)
    assert ans.method_used == "als" and not ans.cold_start and ans.history_items == 4
    got = item_ids(ans)
    assert not set(got) & set(cluster[:4])
    assert set(got) <= set(cluster)
    assert all(i.reasons[0].startswith("because you liked ") for i in ans.items)
    known = recommend(bundle, "2", 10, Strategy.als)  # user 2 is in cluster 1 too
    seen_now = {str(i): 3.0 for i in item_ids(known)[:3]}
    after = recommend(bundle, "2", 10, Strategy.als, history=seen_now)
    assert not set(item_ids(known)[:3]) & set(item_ids(after))
    assert after.history_items == known.history_items + 3


def test_missing_models_fall_back_along_the_chain(models: dict[str, Recommender]) -> None:
    pop_only = only(models, "popularity")
    for strategy in (Strategy.als, Strategy.auto, Strategy.content, Strategy.two_tower):
        ans = recommend(pop_only, "1", 5, strategy)
        assert ans.method_used == "popularity" and ans.fallback and len(ans.items) == 5
        assert any("not in this model version" in n for n in ans.notes)
    both = only(models, "als", "popularity")
    ans = recommend(both, "1", 5, Strategy.hybrid)
    assert ans.method_used == "als" and ans.fallback
    assert [n for n in ans.notes if n.startswith("hybrid")] == ["hybrid: not in this model version"]


def test_filters_hold_for_every_strategy(bundle: Bundle, planted_spec: Any) -> None:
    allowed = planted_spec.items_of_cluster(0)[:8]
    denied = allowed[:2]
    rules = Rules(allow=[str(i) for i in allowed], deny=[str(i) for i in denied])
    for strategy in Strategy:
        ans = recommend(bundle, "1", 5, strategy, rules=rules)
        assert ans.items, strategy
        assert set(item_ids(ans)) <= set(allowed) - set(denied), strategy


def test_mixed_blends_by_alpha(bundle: Bundle) -> None:
    als = recommend(bundle, "4", 5, Strategy.als)
    pop = recommend(bundle, "4", 5, Strategy.popular)
    assert item_ids(recommend(bundle, "4", 5, Strategy.mixed, alpha=1.0)) == item_ids(als)
    assert item_ids(recommend(bundle, "4", 5, Strategy.mixed, alpha=0.0)) == item_ids(pop)
    half = recommend(bundle, "4", 5, Strategy.mixed, alpha=0.5)
    assert half.method_used == "mixed"
    scores = [i.score for i in half.items]
    assert scores == sorted(scores, reverse=True)


def test_similar_items(bundle: Bundle, models: dict[str, Recommender]) -> None:
    ans = similar(bundle, "1000", 5)
    assert ans.method_used == "itemknn" and len(ans.items) == 5
    assert 1000 not in item_ids(ans)
    no_knn = only(models, "als", "popularity")
    assert similar(no_knn, "1000", 5).method_used == "als"
    content = similar(bundle, "1000", 5, "content")  # no content model: cf instead
    assert content.method_used == "itemknn"
    assert any("content" in n for n in content.notes)
    with pytest.raises(UnknownIdError, match="999"):
        similar(bundle, "999", 5)


# ---- online history ----------------------------------------------------------------------


def ev(i: int, user: str, item: str, kind: str = "view", weight: float = 1.0, at: float = 0.0):
    return StoredEvent(user, item, kind, weight, at or time.time(), at or time.time(), id=i)


def test_online_history_applies_each_event_once() -> None:
    h = OnlineHistory()
    assert h.apply([ev(1, "u", "a"), ev(2, "u", "b", weight=2.0), ev(3, "u", "a")]) == 3
    assert h.apply([ev(2, "u", "b", weight=2.0)]) == 0
    items, denied = h.get("u")
    assert items == {"b": 2.0, "a": 2.0} and denied == []
    h.apply([ev(4, "u", "a", "dislike", 0.0)])
    items, denied = h.get("u")
    assert items == {"b": 2.0} and denied == ["a"]
    h.apply([ev(5, "u", "a", "like", 2.0)])
    assert h.get("u") == ({"b": 2.0, "a": 2.0}, [])
    assert h.get("nobody") == ({}, [])


def test_online_history_caps_items_and_forgets_old_events() -> None:
    h = OnlineHistory(ttl_seconds=60, max_items=3)
    h.apply([ev(i, "u", f"i{i}") for i in range(1, 6)])
    assert list(h.get("u")[0]) == ["i3", "i4", "i5"]
    h.apply([ev(9, "old", "x", at=time.time() - 120)])
    assert h.get("old") == ({}, [])


class FakeStore:
    """Events committed in any order, as PostgreSQL may commit them."""

    def __init__(self) -> None:
        self.rows: list[StoredEvent] = []

    def max_event_id(self) -> int:
        return max((r.id for r in self.rows), default=0)

    def events_after(
        self,
        after_id: int,
        *,
        also_ids: Any = (),
        upto_id: int | None = None,
        received_since: float | None = None,
        limit: int = 10_000,
    ) -> list[StoredEvent]:
        out = [
            r
            for r in self.rows
            if (r.id > after_id and (upto_id is None or r.id <= upto_id)) or r.id in also_ids
        ]
        return sorted(out, key=lambda r: r.id)[:limit]


def test_sync_catches_up_with_other_writers_exactly_once() -> None:
    store = FakeStore()
    store.rows = [ev(1, "u", "a"), ev(2, "u", "b")]
    mine, other = OnlineHistory(), OnlineHistory()
    assert mine.bootstrap(store) == 2  # type: ignore[arg-type]
    assert other.bootstrap(store) == 2  # type: ignore[arg-type]
    # Worker "mine" writes id 4 and applies it at once; id 3 is still uncommitted.
    e4 = ev(4, "u", "d")
    store.rows.append(e4)
    mine.apply([e4])
    assert mine.sync(store) == 0  # type: ignore[arg-type]
    assert other.sync(store) == 1  # type: ignore[arg-type]
    # Id 3 commits late: both pick it up from their gap lists.
    store.rows.append(ev(3, "u", "c"))
    assert mine.sync(store) == 1  # type: ignore[arg-type]
    assert other.sync(store) == 1  # type: ignore[arg-type]
    assert mine.sync(store) == 0  # type: ignore[arg-type]
    assert mine.get("u") == other.get("u") == ({"a": 1.0, "b": 1.0, "d": 1.0, "c": 1.0}, [])


# ---- the event store -----------------------------------------------------------------------


def test_database_url_defaults_to_sqlite_and_reads_postgres_urls(tmp_path: Path) -> None:
    assert database_url(None, tmp_path) == f"sqlite:///{tmp_path / 'events.db'}"
    assert database_url("postgresql://u@h/db", tmp_path) == "postgresql+psycopg://u@h/db"
    assert database_url("postgres://u@h/db", tmp_path) == "postgresql+psycopg://u@h/db"
    assert database_url("sqlite:///x.db", tmp_path) == "sqlite:///x.db"


def test_sqlite_store_migrates_writes_reads_and_exports(tmp_path: Path) -> None:
    db = tmp_path / "state" / "events.db"
    store = EventStore(f"sqlite:///{db}")
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            EventStore(store.url).ensure_schema()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    store.ensure_schema()
    assert store.revision == "0002"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"events", "feedback", "hybridrec_alembic_version"} <= tables
    now = time.time()
    rows = [EventRow(str(u), str(1000 + u), "view", 1.0, now - 10, now) for u in range(5)]
    stored = store.add_events(rows)
    assert [s.id for s in stored] == [1, 2, 3, 4, 5]
    stored += store.add_events([EventRow("9", "1009", "dislike", 0.0, now, now)])
    assert store.max_event_id() == 6 and store.count() == 6
    assert [e.id for e in store.events_after(4)] == [5, 6]
    assert [e.id for e in store.events_after(5, also_ids=[2])] == [2, 6]
    out = tmp_path / "out.parquet"
    assert store.export(out) == 5
    df = pl.read_parquet(out)
    assert df["user_id"].dtype == pl.Int64 and df["item_id"].to_list()[:2] == [1000, 1001]
    assert store.export(out, include_dislikes=True) == 6
    assert store.export(out, since=now + 1) == 0
    store.dispose()


def test_unreachable_store_raises_database_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    store = EventStore(f"sqlite:///{blocker / 'sub' / 'events.db'}")
    with pytest.raises(DatabaseUnavailableError):
        store.ensure_schema()
    assert not store.ping()
    with pytest.raises(DatabaseUnavailableError):
        store.add_events([EventRow("1", "2", "view", 1.0, 0.0, 0.0)])
    assert store.last_error


# ---- catalog, service ------------------------------------------------------------------------


def test_catalog_titles_and_categories() -> None:
    listed = Catalog(
        pl.DataFrame(
            {"item_id": [1, 2, 3], "title": ["A", "B", None], "categories": [["Rock"], [], None]}
        )
    )
    assert listed.title(1) == "A" and listed.title("2") == "B" and listed.title(3) is None
    assert listed.in_categories(["rock", "JAZZ"]) == [1]
    piped = Catalog(pl.DataFrame({"item_id": ["x", "y"], "genres": ["Rock|Jazz", "Jazz"]}))
    assert piped.in_categories([" jazz "]) == ["x", "y"]
    assert Catalog(None).in_categories(["any"]) == []


def test_service_follows_the_current_pointer(
    models: dict[str, Recommender], tmp_path: Path
) -> None:
    store = ModelStore(tmp_path)

    def save() -> str:
        return store.write_version(lambda p: write_bundle(p, models), promote=True)

    v1 = save()
    service = ModelService(tmp_path)
    assert service.follow_current() is not None and service.bundle.version == v1
    assert service.follow_current() is None
    v2 = save()
    result = service.follow_current()
    assert result is not None and result.ok and service.bundle.version == v2
    v3 = save()
    (tmp_path / v3 / "cf.joblib").write_bytes(b"broken")
    refused = service.follow_current()
    assert refused is not None and not refused.ok and service.bundle.version == v2
    assert service.follow_current() is None  # not retried until the pointer moves
    assert ModelService(tmp_path, version=v1).follow_current() is None


# ---- query models ---------------------------------------------------------------------------


def _request(query: str) -> Any:
    from starlette.requests import Request

    return Request({"type": "http", "method": "GET", "path": "/", "query_string": query.encode()})


def test_query_parsed_like_fastapi_would() -> None:
    from hybridrec.serving.query import parse_query
    from hybridrec.serving.schemas import AnswerOptions

    got = parse_query(
        AnswerOptions,
        _request("k=3&strategy=als&exclude_seen=false&category=Drama&category=Comedy&mmr=0.5&x=1"),
    )
    assert got == AnswerOptions(
        k=3,
        strategy=Strategy.als,
        exclude_seen=False,
        category=["Drama", "Comedy"],
        mmr=0.5,
    )
    assert parse_query(AnswerOptions, _request("")) == AnswerOptions()


def test_bad_query_values_are_422_errors_located_in_the_query() -> None:
    from fastapi.exceptions import RequestValidationError

    from hybridrec.serving.query import parse_query
    from hybridrec.serving.schemas import AnswerOptions

    with pytest.raises(RequestValidationError) as caught:
        parse_query(AnswerOptions, _request("k=abc&mmr=nan&strategy=nope&k=0"))
    locs = sorted(tuple(e["loc"]) for e in caught.value.errors())
    # The last of repeated values counts, as in FastAPI.
    assert locs == [("query", "k"), ("query", "mmr"), ("query", "strategy")]
    assert all("url" not in e for e in caught.value.errors())


def test_query_model_is_documented_as_query_parameters() -> None:
    from hybridrec.serving.query import query_parameters
    from hybridrec.serving.schemas import AnswerOptions

    params = {p["name"]: p for p in query_parameters(AnswerOptions)["parameters"]}
    assert set(params) == set(AnswerOptions.model_fields)
    assert all(p["in"] == "query" and not p["required"] for p in params.values())
    assert params["k"]["schema"]["maximum"] >= 1 and params["k"]["description"]
    # The enum is inlined (no dangling $ref into the model's own definitions).
    assert "$ref" not in str(params["strategy"]["schema"])
    assert "als" in str(params["strategy"]["schema"])


def test_metrics_dirs_of_gone_servers_are_removed_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed server (SIGKILL) leaves its Prometheus directory; the next start removes it."""
    import os
    import subprocess
    import sys
    import tempfile

    from hybridrec.serving import cli as serving_cli

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = tmp_path / f"hybridrec-metrics-{gone.stdout.strip()}-abc"
    alive = tmp_path / f"hybridrec-metrics-{os.getppid()}-def"
    other = tmp_path / "hybridrec-metrics-notapid"
    for d in (dead, alive, other):
        d.mkdir()
    made = Path(serving_cli._metrics_dir())
    assert made.is_dir() and made.name.startswith(f"hybridrec-metrics-{os.getpid()}-")
    assert not dead.exists() and alive.is_dir() and other.is_dir()
