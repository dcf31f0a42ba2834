r"""Request body rules enforced before any route runs: a size limit and JSON that is JSON.

A pure ASGI middleware, so it sees the body as it streams in: a declared ``Content-Length``
over the limit is refused at once, and a chunked body is refused as soon as the bytes
received pass the limit (413), without ever holding more than the limit in memory. JSON
bodies with ``NaN`` / ``Infinity`` (which Python's parser accepts but JSON does not) or lone
UTF-16 surrogates (``"\ud800"`` escapes, which no database column can store) are answered 422.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimitMiddleware", "json_problem"]

# Cheap pre-checks: a body without these bytes cannot hold either problem.
_CONSTANT = re.compile(rb"NaN|Infinity")
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


def json_problem(body: bytes) -> str | None:
    """Why ``body`` is not acceptable JSON, or None.

    Text that is not JSON at all is None too: the route's own parser reports that.
    """
    constant, surrogate = _CONSTANT.search(body), _SURROGATE.search(body)
    if constant is None and surrogate is None:
        return None
    try:
        parsed = json.loads(body, parse_constant=_reject_constant)
    except ValueError as exc:
        if "not valid JSON" in str(exc):
            return str(exc)
        return None
    if surrogate is not None:
        try:
            json.dumps(parsed, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return "lone UTF-16 surrogate in a string (not valid Unicode text)"
    return None


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes`` (413) and bad JSON (422); pass everything else.

    JSON is bad when it holds non-finite numbers or lone surrogates.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read (and count) the body, check it, then replay it to the app."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and b"json" in headers.get(b"content-type", b"json").lower():
            problem = json_problem(body)
            if problem is not None:
                detail = [{"type": "json_invalid", "loc": ["body"], "msg": problem}]
                await _respond(send, 422, {"detail": detail})
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await _respond(
            send,
            413,
            {"detail": f"request body larger than {self.max_bytes} bytes"},
        )


async def _respond(send: Send, status: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode("ascii")),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
