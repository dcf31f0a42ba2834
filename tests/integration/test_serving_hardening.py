"""Hardening of the HTTP API: body limit (413), bad JSON and over-long ids (422), k capped.

Real servers over loopback (SQLite and PostgreSQL event stores), from the shared fixtures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hybridrec.config import Settings
from hybridrec.serving.events import ID_MAX_LENGTH

LIMIT = 4096


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest,
    serving_store: Path,
    tmp_path_factory: pytest.TempPathFactory,
    launch: Callable[..., Any],
    pg_schemas: Any,
) -> Iterator[Any]:
    url = pg_schemas.new("harden") if request.param == "postgresql" else None
    srv = launch(
        serving_store,
        tmp_path_factory.mktemp("harden"),
        database_url=url,
        extra_env={"HYBRIDREC_MAX_BODY_BYTES": str(LIMIT)},
    )
    try:
        yield srv
    finally:
        srv.stop()


def _raw_post(client: httpx.Client, path: str, body: bytes) -> httpx.Response:
    return client.post(path, content=body, headers={"content-type": "application/json"})


def test_default_limit_is_one_megabyte() -> None:
    assert Settings().max_body_bytes == 1_000_000
    assert Settings(max_body_bytes=10).max_body_bytes == 10


def test_body_over_the_limit_is_413(server: Any) -> None:
    events = [{"user_id": "u", "item_id": 1000} for _ in range(200)]
    with server.client() as c:
        big = httpx.Request("POST", "/events", json=events).content
        assert len(big) > LIMIT
        r = _raw_post(c, "/events", big)
        assert r.status_code == 413, r.text
        assert str(LIMIT) in r.json()["detail"]
    with server.client() as c:
        # Just under the limit is accepted.
        ok = _raw_post(c, "/events", httpx.Request("POST", "/", json=events[:20]).content)
        assert ok.status_code == 201, ok.text


def test_chunked_body_over_the_limit_is_413(server: Any) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"item_ids": ['
        for i in range(2000):
            yield b'"1000",' if i < 1999 else b'"1000"]}'

    with server.client() as c:
        r = c.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413, r.text
        assert r.request.headers.get("transfer-encoding") == "chunked"
    with server.client() as c:
        assert c.get("/health").status_code == 200  # the server is fine after it


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/events", '{"user_id": "u1", "item_id": 1000, "weight": %s}'),
        ("/recommend", '{"item_ids": [1000], "attributes": {"age": %s}}'),
        ("/feedback", '{"user_id": "u1", "item_id": 1000, "value": "up", "source": %s}'),
    ],
)
def test_non_finite_json_is_422(server: Any, path: str, template: str, constant: str) -> None:
    with server.client() as c:
        r = _raw_post(c, path, (template % constant).encode())
    assert r.status_code == 422, r.text
    assert "finite" in r.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/events", b'{"user_id": "\\ud800", "item_id": 1000}'),
        ("/events", b'[{"user_id": "u1", "item_id": "a\\udfffb"}]'),
        ("/recommend", b'{"item_ids": [1000], "attributes": {"\\ud83d": "x"}}'),
        ("/feedback", b'{"user_id": "u1", "item_id": 1000, "value": "up", "source": "\\uDC00"}'),
    ],
)
def test_lone_surrogates_are_422(server: Any, path: str, body: bytes) -> None:
    with server.client() as c:
        r = _raw_post(c, path, body)
    assert r.status_code == 422, r.text
    assert "surrogate" in r.json()["detail"][0]["msg"]


def test_text_that_merely_mentions_nan_is_fine(server: Any) -> None:
    with server.client() as c:
        r = _raw_post(c, "/events", b'{"user_id": "NaN-Infinity \\ud83d\\ude00", "item_id": 1000}')
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    "user_id",
    ["x" * (ID_MAX_LENGTH + 1), 10**ID_MAX_LENGTH, -(10 ** (ID_MAX_LENGTH - 1))],
)
def test_over_long_ids_are_422(server: Any, user_id: object) -> None:
    with server.client() as c:
        for path, body in (
            ("/events", {"user_id": user_id, "item_id": 1000}),
            ("/feedback", {"user_id": 1, "item_id": user_id, "value": "down"}),
        ):
            r = c.post(path, json=body)
            assert r.status_code == 422, (path, r.text)


def test_longest_ids_are_stored(server: Any) -> None:
    longest = [
        "é" * ID_MAX_LENGTH,  # characters, not bytes, as the columns count them
        10 ** (ID_MAX_LENGTH - 1) - 1,
        -(10 ** (ID_MAX_LENGTH - 2)),
    ]
    with server.client() as c:
        for user_id in longest:
            assert len(str(user_id)) <= ID_MAX_LENGTH
            r = c.post("/events", json={"user_id": user_id, "item_id": 1000})
            assert r.status_code == 201, r.text


def test_over_long_path_ids_are_422(server: Any) -> None:
    long_id = "u" * (ID_MAX_LENGTH + 1)
    with server.client() as c:
        assert c.get(f"/recommend/user/{long_id}").status_code == 422
        assert c.get(f"/similar/item/{long_id}").status_code == 422
        assert c.get("/recommend/user/a%01b").status_code == 422  # control character
        assert c.get(f"/recommend/user/{'u' * ID_MAX_LENGTH}").status_code == 200


def test_k_is_capped_at_the_catalog(server: Any) -> None:
    with server.client() as c:
        n_items = c.get("/health").json()["items"]
        catalog = 90  # the serving catalog of the fixtures
        r = c.get("/recommend/user/1", params={"k": 1000, "strategy": "popular"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["k"] <= max(catalog, n_items)
        assert any("more than the" in note for note in body["notes"])
        r = c.post("/recommend", json={"item_ids": [1000], "k": 1000})
        assert r.status_code == 200, r.text
        assert any("more than the" in note for note in r.json()["notes"])
        r = c.get("/similar/item/1000", params={"k": 1000})
        assert r.status_code == 200, r.text
        assert r.json()["k"] <= catalog
        assert any("more than the" in note for note in r.json()["notes"])
        r = c.get("/recommend/user/1", params={"k": 5})
        assert not any("more than the" in note for note in r.json()["notes"])
