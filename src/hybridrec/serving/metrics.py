"""Prometheus metrics of the service, and the ASGI middleware that times every request.

Counters and histograms are labelled by route *template* (``/recommend/user/{user_id}``, not
the user) and strategy, so their number stays bounded. With several worker processes
``hybridrec serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` adds up every worker.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = [
    "CONTENT_TYPE_LATEST",
    "EVENTS",
    "FALLBACKS",
    "RELOADS",
    "MetricsMiddleware",
    "render",
    "set_model_version",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUESTS = Counter(
    "hybridrec_requests_total",
    "HTTP requests by route template, method, status and strategy.",
    ["route", "method", "status", "strategy"],
)
LATENCY = Histogram(
    "hybridrec_request_seconds",
    "Request latency by route template and strategy.",
    ["route", "strategy"],
    buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
FALLBACKS = Counter(
    "hybridrec_fallbacks_total",
    "Answers not given by the first method of the strategy (cold start included).",
    ["strategy", "method_used"],
)
EVENTS = Counter("hybridrec_events_total", "Events and feedback stored, by type.", ["event_type"])
RELOADS = Counter("hybridrec_reloads_total", "Model reloads by result.", ["result"])
MODEL = Gauge(
    "hybridrec_model_info",
    "1 for the model version being served (0 for versions served before).",
    ["version"],
    multiprocess_mode="liveall",
)

_versions: set[str] = set()


def set_model_version(version: str) -> None:
    """Mark ``version`` as the one served."""
    for old in _versions - {version}:
        MODEL.labels(version=old).set(0)
    _versions.add(version)
    MODEL.labels(version=version).set(1)


def render() -> bytes:
    """The exposition text: this process's metrics, or every worker's in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


class MetricsMiddleware:
    """Counts and times HTTP requests (pure ASGI: no per-request task or body copy).

    The strategy label comes from ``scope["state"]["strategy"]``, which recommendation
    routes set once the strategy is validated; other routes are labelled ``-``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request and count it under its route template."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            strategy = str(scope.get("state", {}).get("strategy", "-"))
            REQUESTS.labels(template, scope.get("method", ""), str(status), strategy).inc()
            LATENCY.labels(template, strategy).observe(time.perf_counter() - start)
