"""``/recommend``: for a known (or newly seen) user, and for an anonymous visitor.

The routes only translate: request → `strategies.recommend` (the library's one answer path)
→ response. Answering is CPU-bound, so it runs on a small, bounded pool of threads, off the
event loop: ``/health``, ``/health/ready`` and ``POST /events`` stay fast while
recommendations saturate the process. Answers of a kind that has taken under
``HYBRIDREC_INLINE_MS`` of CPU on average (5 ms; an ALS request: a few tenths) run on the
loop itself, because for them the hop to the answer thread and back costs more than the
work; they take turns, one per loop iteration, so that the loop polls its sockets between
two. Database work (``/health``'s ping, stored events) runs `promptly`: on a thread while
no answer starts, so that it waits for one answer at most, not for the GIL behind them.

During an A/B test (`hybridrec.serving.ab`) the user's arm picks the bundle handed to the
same answer path; the response names the arm, and the items shown are stored as
impressions of that arm (the report's denominator).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, Path, Query, Request, Response

from hybridrec.bundle import Bundle
from hybridrec.errors import ConfigError
from hybridrec.models.explain import Rules
from hybridrec.serving import metrics
from hybridrec.serving.catalog import catalog_of
from hybridrec.serving.deps import StateDep, arm_bundle_of, state_of
from hybridrec.serving.events import ID_MAX_LENGTH, DatabaseUnavailableError
from hybridrec.serving.query import parse_query, query_parameters
from hybridrec.serving.schemas import (
    MAX_K,
    TEXT_PATTERN,
    AnswerOptions,
    RecommendationResponse,
    RecommendedItem,
    Strategy,
    VisitorRequest,
)
from hybridrec.serving.state import AppState
from hybridrec.serving.strategies import Answer, ScoredItem, recommend

__all__ = ["json_response", "offload", "promptly", "router"]

router = APIRouter(tags=["recommend"])
log = logging.getLogger(__name__)

#: Threads answering at once per process: more only queue on the GIL and slow the loop
#: (measured on 2 cores: one keeps /health p99 lowest at the same throughput); scale out
#: with server processes (`--workers`).
WORKER_THREADS = 1
_LIMITER: list[anyio.CapacityLimiter] = []
T = TypeVar("T")


#: Weight of the newest measurement in a kind's running mean of answer seconds.
_COST_WEIGHT = 0.1
_COSTS: dict[Hashable, float] = {}


def inline_below_s() -> float:
    """Answers cheaper than this on average run on the loop (``HYBRIDREC_INLINE_MS``, 5 ms).

    5 rather than less: a slower machine (or a busy one) must not push ALS answers (0.1-2 ms
    here) over it to the pool, whose hop costs about as much again; a probe waits behind one
    inline answer at most (`promptly`).

    Raises:
        ConfigError: The variable is not a non-negative number (0 turns inlining off).
    """
    raw = os.environ.get("HYBRIDREC_INLINE_MS", "").strip() or "5.0"
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(
            f"HYBRIDREC_INLINE_MS must be a number of milliseconds >= 0 (got {raw!r})"
        )
    return value / 1000.0


async def offload(
    func: Callable[..., T], *args: Any, kind: Hashable | None = None, **kwargs: Any
) -> T:
    """Run CPU-bound ``func`` on the bounded answer pool, off the event loop.

    With a ``kind`` (what the cost depends on: strategy, k, reasons...), each call's CPU
    seconds feed that kind's running mean; a kind whose mean is under `inline_below_s` runs on the
    loop (its first call, whose cost is unknown, never does), and goes back to the pool as
    soon as its mean rises above it.
    """
    call = functools.partial(func, *args, **kwargs)
    turns = _turns()
    if kind is None:
        await turns.unheld()
        return await _on_pool(call)
    mean = _COSTS.get(kind)
    inline = mean is not None and mean < inline_below_s()

    # On the pool, CPU seconds of the thread: waiting there for the GIL is not the answer's
    # cost. On the loop, wall seconds are (nothing else runs meanwhile), and the wall clock
    # costs 50 ns a reading where the thread's CPU clock is a system call (~40 µs a reading
    # measured in the loaded server, a tenth of a small answer).
    clock = time.perf_counter if inline else time.thread_time

    def timed() -> T:
        start = clock()
        try:
            return call()
        finally:
            spent = clock() - start
            last = _COSTS.get(kind)
            _COSTS[kind] = spent if last is None else last + _COST_WEIGHT * (spent - last)

    if not inline:
        await turns.unheld()
        return await _on_pool(timed)
    async with turns:
        return timed()


async def promptly(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run short blocking ``func`` (a database ping or insert) on a thread, ahead of answers.

    While it runs, no answer starts, on the loop or on the answer pool: the thread has the
    GIL to itself instead of waiting up to a switch interval (5 ms) for it at each of its
    steps behind an answer that holds it. An answer already running finishes first.
    """
    async with _turns().hold():
        return await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs))


#: The longest an answer waits for `promptly` work: a stream of it (events posted without
#: pause) delays answers, never starves them.
HOLD_MAX_S = 0.005


class _Turns:
    """Answers run on the loop take turns: one per event-loop iteration, first come first.

    Without it, every request that is ready in one iteration answers in that iteration, so
    under load a ``/health`` waits for all of them (16 connections × 1 ms); with it, the
    loop polls its sockets between two answers and a ``/health`` waits for one.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self.busy = False
        #: `promptly` work running now: no answer starts until it is done.
        self.held = 0
        self._free = asyncio.Event()
        self._free.set()
        self._overdue: asyncio.TimerHandle | None = None

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """No answer starts while inside (answers already running go on)."""
        self.held += 1
        self._free.clear()
        try:
            yield
        finally:
            self.held -= 1
            if not self.held:
                self._free.set()
                if not self.busy:
                    self.busy = True
                    self._next()

    async def unheld(self) -> None:
        """Wait until no `hold` is active, or `HOLD_MAX_S`."""
        if self.held:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._free.wait(), HOLD_MAX_S)

    async def __aenter__(self) -> None:
        if self.busy or self.held:
            turn = self.loop.create_future()
            self.waiting.append(turn)
            if not self.busy and self._overdue is None:  # held: wait for it, up to a point
                self._overdue = self.loop.call_later(HOLD_MAX_S, self._force)
            try:
                await turn
            except BaseException:
                if turn.done() and not turn.cancelled():
                    self._next()  # the turn was given: pass it on
                else:
                    self.waiting.remove(turn)
                raise
        self.busy = True

    async def __aexit__(self, *_exc: object) -> None:
        # The next turn starts in a later iteration, after the sockets polled meanwhile.
        self.loop.call_soon(self._next)

    def _next(self) -> None:
        if self.held and self.waiting:
            # The hold's end gives the next turn, or `HOLD_MAX_S` from now, whichever first.
            self.busy = False
            if self._overdue is None:
                self._overdue = self.loop.call_later(HOLD_MAX_S, self._force)
            return
        self._give()

    def _force(self) -> None:
        self._overdue = None
        if not self.busy:
            self.busy = True
            self._give()

    def _give(self) -> None:
        if self._overdue is not None:
            self._overdue.cancel()
            self._overdue = None
        while self.waiting:
            turn = self.waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.busy = False


_TURNS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Turns] = weakref.WeakKeyDictionary()


def _turns() -> _Turns:
    loop = asyncio.get_running_loop()
    turns = _TURNS.get(loop)
    if turns is None:
        turns = _TURNS[loop] = _Turns(loop)
    return turns


async def _on_pool(call: Callable[[], T]) -> T:
    if not _LIMITER:
        _LIMITER.append(anyio.CapacityLimiter(WORKER_THREADS))
    return await anyio.to_thread.run_sync(call, limiter=_LIMITER[0])


def json_response(body: RecommendationResponse | Any) -> Response:
    """The body serialized where it was built (the worker thread), not on the event loop.

    FastAPI would validate a returned model again and walk it with ``jsonable_encoder`` on
    the loop, which costs about as much as answering an ALS request.
    """
    return Response(body.model_dump_json(), media_type="application/json")


UserId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=ID_MAX_LENGTH,
        pattern=TEXT_PATTERN,
        description="The user's id (any text).",
    ),
]
K = Annotated[int, Query(ge=1, le=MAX_K, description="How many items.")]
Alpha = Annotated[
    float, Query(ge=0.0, le=1.0, description="mixed: weight of ALS against popularity.")
]


def _kind(
    route: str, strategy: Strategy, k: int, rules: Rules, explain: bool, *, model: str | None = None
) -> Hashable:
    """What an answer's cost depends on, as `offload` tells kinds apart."""
    heavy = rules.mmr_lambda is not None or rules.min_popularity is not None
    return (route, strategy.value, model, k, explain, heavy, bool(rules.include_categories))


def clamp_k(bundle: Bundle, k: int, notes: list[str]) -> int:
    """``k`` capped at the number of items the served version knows (with a note if it was)."""
    counts = [int(m.get("items") or 0) for m in bundle.manifest.get("models", {}).values()]
    n_items = max([*counts, bundle.items.height if bundle.items is not None else 0, 1])
    if k > n_items:
        notes.append(f"k={k} is more than the {n_items} items; answered k={n_items}")
        return n_items
    return k


def ranked_items(bundle: Bundle, items: Sequence[ScoredItem]) -> list[RecommendedItem]:
    """Response items, ranked from 1, with titles from the bundle's catalog."""
    catalog = catalog_of(bundle)
    return [
        RecommendedItem(
            item_id=item.item_id,
            title=catalog.title(item.item_id),
            score=item.score,
            rank=rank,
            method=item.method,
            reasons=list(item.reasons),
        )
        for rank, item in enumerate(items, start=1)
    ]


def to_response(
    bundle: Bundle,
    *,
    user_id: str | None,
    strategy: Strategy,
    k: int,
    result: Answer,
    notes: list[str],
    arm: str | None = None,
) -> RecommendationResponse:
    """Translate an `Answer` into the response body (titles from the catalog)."""
    if result.fallback:
        metrics.FALLBACKS.labels(strategy.value, result.method_used).inc()
    return RecommendationResponse(
        user_id=user_id,
        strategy=strategy,
        method_used=result.method_used,
        cold_start=result.cold_start,
        fallback=result.fallback,
        model_version=bundle.version,
        k=k,
        history_items=result.history_items,
        items=ranked_items(bundle, result.items),
        notes=notes + result.notes,
        arm=arm,
    )


def _answer(
    bundle: Bundle,
    *,
    user_id: str,
    shown_id: str | None,
    k: int,
    strategy: Strategy,
    alpha: float,
    rules: Rules,
    history: dict[str, float],
    explain: bool,
    notes: list[str],
    model: str | None = None,
    arm: str | None = None,
    shown: list[str] | None = None,
    attributes: dict[str, Any] | None = None,
) -> Response:
    """The whole CPU-bound part of a request: the library's answer and the response body.

    ``shown`` (when given) receives the ids of the items answered, for impressions.
    """
    if rules.include_categories and not catalog_of(bundle).in_categories(rules.include_categories):
        notes.append(f"no items in categories {', '.join(rules.include_categories)}")
    result = recommend(
        bundle,
        user_id,
        k,
        strategy,
        alpha=alpha,
        rules=rules,
        history=history,
        explain=explain,
        model=model,
        attributes=attributes,
    )
    body = to_response(
        bundle, user_id=shown_id, strategy=strategy, k=k, result=result, notes=notes, arm=arm
    )
    if shown is not None:
        shown.extend(str(item.item_id) for item in body.items)
    return json_response(body)


async def _record_impressions(
    state: AppState, user_id: str, arm: str, bundle: Bundle, shown: list[str]
) -> None:
    """Store what an A/B test's user was shown; a failing event store only logs.

    The answer has been computed already, so the user gets it either way; the report then
    undercounts that arm's impressions, which the warning says.
    """
    try:
        await promptly(state.store.add_impressions, user_id, arm, bundle.version, shown)
    except DatabaseUnavailableError as exc:
        log.warning("A/B impressions of arm %s not stored: %s", arm, exc)


async def _recommend_user(
    *,
    request: Request,
    state: StateDep,
    user_id: str,
    k: int,
    strategy: Strategy,
    alpha: float,
    exclude_seen: bool,
    category: list[str] | None,
    exclude_category: list[str] | None = None,
    min_popularity: int | None = None,
    mmr: float | None = None,
    explain: bool = True,
    model: str | None = None,
) -> Response:
    request.state.strategy = strategy.value
    arm, bundle = arm_bundle_of(state, user_id)
    history, denied = state.online.get(user_id)
    notes: list[str] = []
    k = clamp_k(bundle, k, notes)
    rules = Rules(
        exclude_seen=exclude_seen,
        include_categories=category or None,
        exclude_categories=exclude_category or None,
        deny=denied or None,
        min_popularity=min_popularity,
        mmr_lambda=mmr,
    )
    shown: list[str] | None = None if arm is None else []
    response = await offload(
        _answer,
        bundle,
        kind=_kind("user", strategy, k, rules, explain, model=model),
        user_id=user_id,
        shown_id=user_id,
        k=k,
        strategy=strategy,
        alpha=alpha,
        rules=rules,
        history=history,
        explain=explain,
        notes=notes,
        model=model,
        arm=arm,
        shown=shown,
    )
    if arm is not None and shown is not None:
        await _record_impressions(state, user_id, arm, bundle, shown)
    return response


@router.get(
    "/recommend/user/{user_id}",
    response_model=RecommendationResponse,
    openapi_extra=query_parameters(AnswerOptions),
)
async def recommend_user(request: Request, user_id: UserId) -> Response:
    """Top-k items for a user. An unknown user gets the cold-start path (not 404).

    The query is one model (`AnswerOptions`), validated in one step by `parse_query`, and
    the state is read without dependencies: FastAPI's per-parameter, per-model and
    per-dependency work costs about as much as a small answer.
    """
    query = parse_query(AnswerOptions, request)
    return await _recommend_user(
        request=request,
        state=state_of(request),
        user_id=user_id,
        k=query.k,
        strategy=query.strategy,
        alpha=query.alpha,
        exclude_seen=query.exclude_seen,
        category=query.category,
        exclude_category=query.exclude_category,
        min_popularity=query.min_popularity,
        mmr=query.mmr,
        explain=query.explain,
        model=query.model,
    )


@router.get("/recommend/mixed/{user_id}", response_model=RecommendationResponse)
async def recommend_mixed(
    request: Request,
    state: StateDep,
    user_id: UserId,
    k: K = 10,
    alpha: Alpha = 0.8,
) -> Response:
    """Shortcut for ``strategy=mixed``: ALS blended with popularity by ``alpha``."""
    return await _recommend_user(
        request=request,
        state=state,
        user_id=user_id,
        k=k,
        strategy=Strategy.mixed,
        alpha=alpha,
        exclude_seen=True,
        category=None,
    )


@router.post("/recommend", response_model=RecommendationResponse)
async def recommend_visitor(request: Request, state: StateDep, body: VisitorRequest) -> Response:
    """Top-k items for a visitor with no id, from the items they just looked at (fold-in).

    During an A/B test, ``visitor_id`` picks the arm (and its impressions are stored under
    it); a visitor without one gets arm A and is not counted in the test.
    """
    request.state.strategy = body.strategy.value
    ab_id = None if body.visitor_id is None else str(body.visitor_id)
    arm, bundle = arm_bundle_of(state, ab_id)
    notes: list[str] = []
    k = clamp_k(bundle, body.k, notes)
    history: dict[str, float] = {}
    for item in body.item_ids:
        key = str(item)
        history[key] = history.get(key, 0.0) + 1.0
    rules = Rules(
        exclude_seen=body.exclude_seen,
        include_categories=body.category or None,
        exclude_categories=body.exclude_category or None,
        allow=None if body.allow is None else [str(i) for i in body.allow],
        deny=[str(i) for i in body.deny] if body.deny else None,
        min_popularity=body.min_popularity,
        mmr_lambda=body.mmr,
    )
    # An id no vocabulary can hold, so the visitor is always folded in from ``item_ids``.
    visitor = f"visitor:{uuid.uuid4().hex}"
    shown: list[str] | None = None if arm is None or ab_id is None else []
    response = await offload(
        _answer,
        bundle,
        kind=_kind(
            "visitor+attributes" if body.attributes else "visitor",
            body.strategy,
            k,
            rules,
            body.explain,
            model=body.model,
        ),
        user_id=visitor,
        shown_id=None,
        k=k,
        strategy=body.strategy,
        alpha=body.alpha,
        rules=rules,
        history=history,
        explain=body.explain,
        notes=notes,
        model=body.model,
        arm=arm,
        shown=shown,
        attributes=body.attributes,
    )
    if arm is not None and ab_id is not None and shown is not None:
        await _record_impressions(state, ab_id, arm, bundle, shown)
    return response
