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


@pytest.mark.parametrize("kind", ["cheap", "costly", None])
def test_prompt_work_runs_before_answers_start(monkeypatch: pytest.MonkeyPatch, kind) -> None:
    # A database ping (`promptly`) and answers arrive together: no answer starts, on the
    # loop (cheap) or on the pool (costly, no kind), until the ping's thread is done.
    monkeypatch.setenv("HYBRIDREC_INLINE_MS", "50")
    monkeypatch.setattr(routes, "HOLD_MAX_S", 1.0)  # longer than the ping
    routes._COSTS["cheap"] = 0.001
    routes._COSTS["costly"] = 1.0
    log: list[str] = []

    def ping() -> str:
        log.append("ping start")
        time.sleep(0.05)  # blocking I/O: the GIL is free meanwhile
        log.append("ping end")
        return threading.current_thread().name

    def answer(i: int) -> None:
        log.append(f"answer {i}")

    async def main() -> str:
        loop = threading.current_thread().name
        where: list[str] = []

        async def prompt() -> None:
            where.append(await routes.promptly(ping))

        async with anyio.create_task_group() as tg:
            tg.start_soon(prompt)
            for i in range(2):
                tg.start_soon(lambda i=i: routes.offload(answer, i, kind=kind))
        assert where and where[0] != loop  # the ping ran on a thread
        return loop

    anyio.run(main)
    assert log[:2] == ["ping start", "ping end"]
    assert sorted(log[2:]) == ["answer 0", "answer 1"]


def test_a_stream_of_prompt_work_delays_answers_without_starving_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pings back to back for 0.3 s: answers still run, each held back at most HOLD_MAX_S.
    monkeypatch.setenv("HYBRIDREC_INLINE_MS", "50")
    routes._COSTS["cheap"] = 0.001
    done: list[float] = []

    async def main() -> float:
        end = time.perf_counter() + 0.3

        async def pings() -> None:
            while time.perf_counter() < end:
                await routes.promptly(time.sleep, 0.002)

        async def answers() -> None:
            while time.perf_counter() < end:
                await routes.offload(lambda: None, kind="cheap")
                done.append(time.perf_counter())

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(pings)
            tg.start_soon(answers)
        return end

    anyio.run(main)
    assert len(done) >= 10  # ~1 per HOLD_MAX_S (5 ms) over 0.3 s; none without the bound
