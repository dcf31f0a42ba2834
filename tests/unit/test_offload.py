"""The answer pool: cheap kinds of answers run on the event loop, costly ones on the pool."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from hybridrec.errors import ConfigError
from hybridrec.serving.routes import recommend as routes


@pytest.fixture(autouse=True)
def fresh_costs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes, "_COSTS", {})


def _where(busy_s: float = 0.0) -> str:
    """The thread it ran on, after ``busy_s`` seconds of CPU work (cost is CPU time)."""
    end = time.thread_time() + busy_s
    while time.thread_time() < end:
        pass
    return threading.current_thread().name


def test_cheap_kind_runs_inline_after_its_first_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRIDREC_INLINE_MS", "50")

    async def main() -> list[str]:
        loop = threading.current_thread().name
        seen = [await routes.offload(_where, kind="cheap") for _ in range(3)]
        return [loop, *seen]

    loop, first, *rest = anyio.run(main)
    assert first != loop  # cost unknown: the pool
    assert rest == [loop, loop]  # measured cheap: the loop itself


def test_costly_kind_and_no_kind_stay_on_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRIDREC_INLINE_MS", "5")

    async def main() -> tuple[str, list[str], list[str]]:
        loop = threading.current_thread().name
        slow = [await routes.offload(_where, 0.02, kind="slow") for _ in range(3)]
        plain = [await routes.offload(_where) for _ in range(2)]
        return loop, slow, plain

    loop, slow, plain = anyio.run(main)
    assert loop not in slow and loop not in plain


def test_kind_goes_back_to_the_pool_when_it_gets_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRIDREC_INLINE_MS", "5")
    routes._COSTS["k"] = 0.0

    async def main() -> list[str]:
        loop = threading.current_thread().name
        seen = []
        for _ in range(30):
            seen.append(await routes.offload(_where, 0.01, kind="k") == loop)
        return seen

    inline = anyio.run(main)
    assert inline[0] and not inline[-1]  # the running mean crossed 5 ms


@pytest.mark.parametrize("raw", ["fast", "-1", "nan"])
def test_bad_setting(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("HYBRIDREC_INLINE_MS", raw)
    with pytest.raises(ConfigError, match="HYBRIDREC_INLINE_MS"):
        routes.inline_below_s()


def test_zero_turns_inlining_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRIDREC_INLINE_MS", "0")
    routes._COSTS["k"] = 0.0

    async def main() -> bool:
        return await routes.offload(_where, kind="k") == threading.current_thread().name

    assert not anyio.run(main)


def test_inline_answers_take_turns_with_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    # Three answers and a cheap request arrive together: the request waits for one answer,
    # not for all three (the loop gets its turn between two answers run on it).
    monkeypatch.setenv("HYBRIDREC_INLINE_MS", "50")
    routes._COSTS["cheap"] = 0.001
    log: list[str] = []

    def answer(i: int) -> str:
        log.append(f"answer {i}")
        return _where(0.002)

    async def main() -> list[str]:
        loop = threading.current_thread().name

        async def one(i: int) -> None:
            assert await routes.offload(answer, i, kind="cheap") == loop

        async def probe() -> None:
            log.append("probe")

        async with anyio.create_task_group() as tg:
            for i in range(3):
                tg.start_soon(one, i)
            tg.start_soon(probe)
        return log

    assert anyio.run(main) == ["answer 0", "probe", "answer 1", "answer 2"]
