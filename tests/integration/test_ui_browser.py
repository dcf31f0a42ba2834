"""The web UI end to end: ``hybridrec serve`` + ``hybridrec ui``, driven by headless Chromium.

Both run as real processes on free loopback ports (the UI is ``streamlit run`` under
``hybridrec ui``); Selenium drives Debian's Chromium through ``/usr/bin/chromedriver``.
A person's session: pick a user, read 10 recommendations, thumbs up one (the row lands in
the server's SQLite event store and the next list shows the effect), open similar items,
then a new visitor with 3 items. Screenshots of each step go to the test's folder.

Elements are found by their Streamlit keys (the class ``st-key-<key>``), and every step
waits for the app to finish its run (``data-test-script-state``) with nothing stale left,
never for a fixed time. Without Chromium the test skips with a reason locally and fails
under CI (``make test`` installs ``chromium`` and ``chromium-driver``).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_helpers import HYBRIDREC, _ci

Server = Any  # conftest.Server, from the `launch` fixture
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1400, 2200)  # tall: Streamlit scrolls inside the page, screenshots show the window
WAIT_S = 30


@pytest.fixture(scope="module")
def api(
    serving_store: Path, tmp_path_factory: pytest.TempPathFactory, launch: Callable[..., Server]
) -> Iterator[Server]:
    """The API over the shared store (read only: feedback goes to the event store)."""
    server = launch(
        serving_store,
        tmp_path_factory.mktemp("ui-browser-api"),
        extra_env={"HYBRIDREC_TRACKING": "false"},
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ui(api: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``hybridrec ui`` over `api`, headless, on a free loopback port; its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("ui-browser") / "ui.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDREC_")}
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [
                str(HYBRIDREC),
                "ui",
                "--api-url",
                api.url,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"hybridrec ui exited {proc.returncode}:\n{log.read_text()}"
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"the UI did not start in 60 s:\n{log.read_text()}"
            time.sleep(0.2)
        assert f"UI on {url} over the API at {api.url}" in log.read_text()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        reason = (
            "chromium / chromium-driver are not installed (make test installs them: "
            "apt-get install chromium chromium-driver)"
        )
        if _ci():
            pytest.fail(f"CI: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container: Chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


# ---- waiting on Streamlit ----------------------------------------------------------------------


def css(key: str) -> str:
    """The CSS selector of the element Streamlit rendered for ``key=``."""
    return f".st-key-{key}"


def idle(driver: Any) -> bool:
    """The script run is over and every element on the page is from it."""
    from selenium.webdriver.common.by import By

    apps = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stApp"]')
    return (
        bool(apps)
        and apps[0].get_attribute("data-test-script-state") == "notRunning"
        and not driver.find_elements(By.CSS_SELECTOR, '[data-stale="true"]')
    )


def settle(driver: Any, what: str, condition: Callable[[Any], Any]) -> Any:
    """Wait until ``condition`` holds on an idle page; returns its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(d: Any) -> Any:
        try:
            value = condition(d)
        except Exception:  # an element replaced mid-check: look again
            return False
        return value if value and idle(d) else False

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(ready, f"waiting for {what}")


def text(driver: Any, key: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, css(key))
    return str(found[0].text) if found else ""


def card_items(driver: Any) -> list[int]:
    """The item id on each card, best first (its caption ends with ``item <id>``)."""
    from selenium.webdriver.common.by import By

    out = []
    for rank in range(1, 101):
        found = driver.find_elements(By.CSS_SELECTOR, css(f"card-{rank}"))
        if not found:
            break
        line = next(t for t in found[0].text.splitlines() if " item " in f" {t}")
        out.append(int(line.rsplit("item ", 1)[1]))
    return out


def click(driver: Any, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f"{css(key)} button").click()


def feedback(server: Server) -> list[tuple[str, str, str]]:
    with sqlite3.connect(server.log.parent / "events.db") as db:
        return db.execute("SELECT user_id, item_id, value FROM feedback ORDER BY id").fetchall()


# ---- the session --------------------------------------------------------------------------------


def test_a_session_in_chromium(ui: str, api: Server, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    start = time.monotonic()
    shots: list[Path] = []

    def shot(name: str) -> None:
        shots.append(tmp_path / f"{len(shots) + 1:02d}-{name}.png")
        assert browser.save_screenshot(str(shots[-1])), shots[-1]

    browser.get(ui)
    settle(browser, "the first answer", lambda d: "items for user" in text(d, "answer"))
    assert "Serving" in text(browser, "api-status")

    # A user, picked by searching their id: 10 cards beside their history.
    field = browser.find_element(By.CSS_SELECTOR, f"{css('user_query')} input")
    field.send_keys("3", Keys.ENTER)
    settle(browser, "user 3's answer", lambda d: "10 items for user 3" in text(d, "answer"))
    shown = card_items(browser)
    assert len(shown) == 10
    expected = httpx.get(f"{api.url}/recommend/user/3", params={"k": 10}).json()
    assert shown == [i["item_id"] for i in expected["items"]]
    first = browser.find_element(By.CSS_SELECTOR, css("card-1")).text
    assert "score" in first and "method" in first and "because you liked" in first
    assert "History of user 3" in text(browser, "history")
    shot("user")

    # Thumbs up on the first card: stored, confirmed, and gone from the next list.
    liked = shown[0]
    click(browser, "up-1")
    settle(browser, "the confirmation", lambda d: "stored (feedback #" in text(d, "flash"))
    assert ("3", str(liked), "up") in feedback(api)
    assert liked not in card_items(browser) and len(card_items(browser)) == 10
    shot("feedback")

    # Similar items of the (new) first card: collaborative and content side by side.
    click(browser, "similar-1")
    panel = settle(
        browser,
        "the similar panel",
        lambda d: (
            all(text(d, f"similar-{m}").count("\n") >= 5 for m in ("cf", "content"))
            and text(d, "similar-panel")
        ),
    )
    assert "Collaborative" in panel and "Content" in panel
    shot("similar")
    click(browser, "similar-close")
    settle(
        browser,
        "the panel closed",
        lambda d: not d.find_elements(By.CSS_SELECTOR, css("similar-panel")),
    )

    # A new visitor who liked 3 rock albums.
    (visitor,) = [
        label
        for label in browser.find_elements(By.CSS_SELECTOR, f"{css('who')} label")
        if label.text.strip() == "New visitor"
    ]
    visitor.click()
    settle(
        browser,
        "the visitor's picker",
        lambda d: d.find_elements(By.CSS_SELECTOR, css("visitor_items")),
    )
    search = browser.find_element(By.CSS_SELECTOR, f"{css('item_query')} input")
    search.send_keys("rock", Keys.ENTER)
    settle(
        browser, "the search", lambda d: "30 catalog items match 'rock'" in text(d, "item_matches")
    )
    for n in range(1, 4):
        browser.find_element(By.CSS_SELECTOR, f"{css('visitor_items')} input").click()
        # The list opens with "Select all"; the items follow, most popular first.
        option = settle(
            browser,
            "the options",
            lambda d: [
                o
                for o in d.find_elements(By.CSS_SELECTOR, '[role="option"]')
                if o.text.startswith("rock album")
            ],
        )[0]
        option.click()
        settle(
            browser,
            f"{n} items picked",
            lambda d, n=n: f"{n} history items used" in text(d, "answer"),
        )
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    answer = settle(browser, "the visitor's answer", lambda d: text(d, "answer"))
    assert "items for the visitor" in answer and "3 history items used" in answer
    assert len(card_items(browser)) == 10
    assert text(browser, "history").count("rock album") == 3
    shot("visitor")

    assert all(p.stat().st_size > 20_000 for p in shots), [p.stat().st_size for p in shots]
    elapsed = time.monotonic() - start
    assert elapsed < 60, f"the session took {elapsed:.0f} s"
