"""The UI's HTTP client: one method per API route it uses, errors as one clear sentence.

The API's own messages (``detail``) are passed on as they are: they already name the
problem (an unknown user, a wrong token, nothing to roll back to). An API that cannot be
reached is `ApiUnreachable`, saying where it was looked for and how to point elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from hybridrec.errors import HybridrecError

__all__ = [
    "API_URL_ENV",
    "DEFAULT_API_URL",
    "ApiClient",
    "ApiError",
    "ApiUnreachableError",
    "api_url",
]

API_URL_ENV = "HYBRIDREC_API_URL"
DEFAULT_API_URL = "http://127.0.0.1:8000"
Id = int | str


def api_url() -> str:
    """The API's base URL: ``HYBRIDREC_API_URL``, else `DEFAULT_API_URL`."""
    return (os.environ.get(API_URL_ENV, "").strip() or DEFAULT_API_URL).rstrip("/")


class ApiError(HybridrecError):
    """The API answered with an error.

    Attributes:
        status: The HTTP status (None when no answer came).
        detail: The API's own message.
    """

    def __init__(self, message: str, *, status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail or message


class ApiUnreachableError(ApiError):
    """No answer from the API (not running, wrong URL, timed out)."""


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # a 422: each invalid field with its message
        return "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', [])[1:])}: {e.get('msg')}" for e in detail
        )
    return str(detail if detail is not None else body)


class ApiClient:
    """Calls the hybridrec HTTP API.

    Args:
        base_url: Where the API listens (``http://127.0.0.1:8000``).
        timeout: Seconds per request.
    """

    def __init__(self, base_url: str, *, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        token: str | None = None,
    ) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, params=query, json=json, headers=headers)
        except httpx.TransportError as exc:
            raise ApiUnreachableError(
                f"the API at {self.base_url} cannot be reached ({type(exc).__name__}: {exc}); "
                f"start it with 'hybridrec serve' or point {API_URL_ENV} at it"
            ) from None
        if response.status_code >= 400:
            detail = _detail(response)
            raise ApiError(
                f"{method} {path}: {response.status_code} {detail}",
                status=response.status_code,
                detail=detail,
            )
        return response.json()

    # ---- what is served ----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /health``: the served version, the database, uptime."""
        body: dict[str, Any] = self._call("GET", "/health")
        return body

    def model(self) -> dict[str, Any]:
        """``GET /model``: the served version's manifest facts, metrics, strategies."""
        body: dict[str, Any] = self._call("GET", "/model")
        return body

    def versions(self) -> dict[str, Any]:
        """``GET /model/versions``: the store's versions."""
        body: dict[str, Any] = self._call("GET", "/model/versions")
        return body

    def ab(self) -> dict[str, Any]:
        """``GET /model/ab``: the A/B test running (else the last), as ``ab report`` has it."""
        body: dict[str, Any] = self._call("GET", "/model/ab")
        return body

    def decisions(self, *, limit: int = 20) -> dict[str, Any]:
        """``GET /model/decisions``: retraining decisions, newest first."""
        body: dict[str, Any] = self._call("GET", "/model/decisions", params={"limit": limit})
        return body

    def rollback(self, token: str, current: str) -> dict[str, Any]:
        """``POST /admin/rollback``: back from ``current`` (refused if it is no longer)."""
        body: dict[str, Any] = self._call(
            "POST", "/admin/rollback", json={"current": current}, token=token
        )
        return body

    # ---- catalog and users ---------------------------------------------------------------------

    def users(self, q: str | None = None, *, limit: int = 50) -> dict[str, Any]:
        """``GET /users``: known users whose id contains ``q``."""
        body: dict[str, Any] = self._call("GET", "/users", params={"q": q or None, "limit": limit})
        return body

    def items(
        self, q: str | None = None, *, ids: Sequence[Id] | None = None, limit: int = 50
    ) -> dict[str, Any]:
        """``GET /items``: catalog items matching ``q``, or exactly ``ids``."""
        params: dict[str, Any] = {"q": q or None, "limit": limit}
        if ids is not None:
            params["id"] = [str(i) for i in ids]
        body: dict[str, Any] = self._call("GET", "/items", params=params)
        return body

    def history(self, user_id: Id, *, limit: int = 50) -> dict[str, Any]:
        """``GET /users/{user_id}/history`` (an unknown user is an `ApiError` with 404)."""
        body: dict[str, Any] = self._call(
            "GET", f"/users/{_path(user_id)}/history", params={"limit": limit}
        )
        return body

    # ---- answers ------------------------------------------------------------------------------

    def recommend_user(
        self, user_id: Id, *, strategy: str = "auto", k: int = 10, alpha: float | None = None
    ) -> dict[str, Any]:
        """``GET /recommend/user/{user_id}``."""
        params = {"strategy": strategy, "k": k, "alpha": alpha}
        body: dict[str, Any] = self._call("GET", f"/recommend/user/{_path(user_id)}", params=params)
        return body

    def recommend_visitor(
        self,
        item_ids: Sequence[Id],
        *,
        strategy: str = "auto",
        k: int = 10,
        alpha: float | None = None,
        deny: Sequence[Id] = (),
        attributes: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``POST /recommend``: a visitor without an id, from the items they liked.

        ``attributes``: the visitor's user attributes (those ``GET /model`` lists), for a
        model that answers from them.
        """
        payload: dict[str, Any] = {"item_ids": list(item_ids), "strategy": strategy, "k": k}
        if alpha is not None:
            payload["alpha"] = alpha
        if deny:
            payload["deny"] = list(deny)
        if attributes:
            payload["attributes"] = dict(attributes)
        body: dict[str, Any] = self._call("POST", "/recommend", json=payload)
        return body

    def similar(self, item_id: Id, *, method: str = "cf", k: int = 5) -> dict[str, Any]:
        """``GET /similar/item/{item_id}`` by ``method`` (cf, content or hybrid)."""
        body: dict[str, Any] = self._call(
            "GET", f"/similar/item/{_path(item_id)}", params={"method": method, "k": k}
        )
        return body

    def feedback(
        self,
        user_id: Id,
        item_id: Id,
        value: str,
        *,
        source: str | None = None,
        model_version: str | None = None,
    ) -> dict[str, Any]:
        """``POST /feedback``: a thumbs ``up`` or ``down``."""
        payload = {
            "user_id": user_id,
            "item_id": item_id,
            "value": value,
            "source": source,
            "model_version": model_version,
        }
        body: dict[str, Any] = self._call(
            "POST", "/feedback", json={k: v for k, v in payload.items() if v is not None}
        )
        return body


def _path(value: Id) -> str:
    """An id as one path segment (``/``, ``?``, ``#`` and spaces escaped)."""
    return quote(str(value), safe="")
