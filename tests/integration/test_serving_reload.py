"""Hot reload under load: 20 reloads while 4 client threads keep asking; nothing may fail.

Every response names the version it was answered with; it must be a version that was
current at some moment while the request was in flight. A corrupted version is refused
while the old one keeps serving.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from hybridrec.bundle import ModelStore

RELOADS = 20
CLIENTS = 4
STRATEGIES = ("als", "auto", "content", "mixed", "popular")


@dataclass(frozen=True)
class Call:
    start: float
    end: float
    status: int
    version: str | None
    error: str | None = None


def _client_loop(url: str, stop: threading.Event, out: list[Call], seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            user = rng.choice([1, 2, 3, 5, 8, 13, 21, 34, 55, 89, "new-user"])
            params = {"k": 5, "strategy": rng.choice(STRATEGIES)}
            start = time.monotonic()
            try:
                r = client.get(f"/recommend/user/{user}", params=params)
                version = r.json().get("model_version") if r.status_code == 200 else None
                out.append(Call(start, time.monotonic(), r.status_code, version))
            except Exception as exc:
                out.append(Call(start, time.monotonic(), 0, None, repr(exc)))


def _windows_overlap(windows: list[tuple[float, float]], start: float, end: float) -> bool:
    return any(a <= end and b >= start for a, b in windows)


def test_twenty_reloads_under_load_fail_no_request(
    serving_store: Path, tmp_path: Path, launch_temp: Callable[..., Any]
) -> None:
    import shutil

    store_dir = tmp_path / "models"
    shutil.copytree(serving_store, store_dir)
    store = ModelStore(store_dir)
    v1, v2 = store.versions()[:2]
    assert store.current() == v2
    server = launch_temp(store_dir, tmp_path / "data")
    # When each version may have been current: from the moment its pointer was written to
    # the end of the reload call that replaced it (the background sync may swap earlier).
    windows: dict[str, list[tuple[float, float]]] = {v2: []}
    opened = {v2: 0.0}
    calls: list[Call] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=_client_loop, args=(server.url, stop, calls, i))
        for i in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    reload_seconds = []
    try:
        time.sleep(0.3)
        with server.admin() as admin:
            for i in range(RELOADS):
                target, old = (v1, v2) if i % 2 == 0 else (v2, v1)
                t0 = time.monotonic()
                opened[target] = t0
                store.promote(target)
                r = admin.post("/admin/reload-model")
                t1 = time.monotonic()
                assert r.status_code == 200, r.text
                assert r.json()["ok"] is True and r.json()["version"] == target
                reload_seconds.append(r.json()["seconds"])
                windows.setdefault(old, []).append((opened[old], t1))
                time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    end = time.monotonic() + 1
    final = store.current()
    assert final is not None
    windows.setdefault(final, []).append((opened[final], end))

    failed = [c for c in calls if c.status != 200]
    assert not failed, f"{len(failed)} of {len(calls)} failed, e.g. {failed[:3]}"
    assert len(calls) >= 100, f"only {len(calls)} requests during the reloads"
    assert {c.version for c in calls} == {v1, v2}
    wrong = [c for c in calls if not _windows_overlap(windows[str(c.version)], c.start, c.end)]
    assert not wrong, f"answered by a version not current during the request: {wrong[:3]}"
    with server.client() as c:
        metrics = c.get("/metrics").text
    assert 'hybridrec_reloads_total{result="ok"}' in metrics


def test_a_corrupted_version_is_refused_and_the_old_one_keeps_serving(
    serving_store: Path, tmp_path: Path, launch_temp: Callable[..., Any]
) -> None:
    import json
    import shutil

    store_dir = tmp_path / "models"
    shutil.copytree(serving_store, store_dir)
    store = ModelStore(store_dir)
    good = store.current()
    assert good is not None
    bad = "29991231-000000-000000"
    shutil.copytree(store_dir / good, store_dir / bad)
    manifest = json.loads((store_dir / bad / "manifest.json").read_text(encoding="utf-8"))
    manifest["version"] = bad
    (store_dir / bad / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    cf = store_dir / bad / "cf.joblib"
    data = bytearray(cf.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cf.write_bytes(bytes(data))

    server = launch_temp(store_dir, tmp_path / "data")
    with server.admin() as admin:
        before = admin.get("/recommend/user/3", params={"k": 5, "strategy": "als"}).json()
        store.promote(bad)
        r = admin.post("/admin/reload-model")
        assert r.status_code == 409, r.text
        body = r.json()
        assert body["ok"] is False and body["version"] == good
        assert "cf.joblib" in body["error"]
        # Also the background sync, which sees the pointer move, leaves it alone.
        time.sleep(1.2)
        after = admin.get("/recommend/user/3", params={"k": 5, "strategy": "als"}).json()
        assert after["model_version"] == good
        assert after["items"] == before["items"]
        health = admin.get("/health").json()
        assert health["model_version"] == good and health["ready"] is True
        assert admin.get("/health/ready").status_code == 200
        # A good version promoted afterwards is taken.
        store.promote(good)
        assert admin.post("/admin/reload-model").status_code == 200


def test_a_served_file_truncated_on_disk_is_logged_and_the_server_keeps_answering(
    serving_store: Path, tmp_path: Path, launch_temp: Callable[..., Any]
) -> None:
    import shutil

    store_dir = tmp_path / "models"
    shutil.copytree(serving_store, store_dir)
    server = launch_temp(store_dir, tmp_path / "data")
    version = ModelStore(store_dir).path()
    part = version / "cf.joblib"
    with server.client() as client:
        assert client.get("/recommend/user/1", params={"strategy": "als"}).status_code == 200
        part.chmod(0o644)
        with part.open("r+b") as fh:  # what a broken copy or a full disk leaves behind
            fh.truncate(part.stat().st_size // 4)
        for user in (1, 2, 3, 5, 8, 13, 21):  # pages not touched yet included
            for strategy in ("als", "auto", "mixed"):
                r = client.get(f"/recommend/user/{user}", params={"strategy": strategy, "k": 50})
                assert r.status_code == 200, r.text
        deadline = time.monotonic() + 10
        while "changed on disk" not in server.logs() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.get("/health").status_code == 200
    assert server.proc.poll() is None, server.logs()
    assert "cf.joblib changed on disk" in server.logs()
