"""Bearer-token guard of the admin and debug routes.

No token configured (``HYBRIDREC_ADMIN_TOKEN`` unset): the routes are off (404). A token
configured: a request without ``Authorization: Bearer ...`` gets 401, a wrong token 403.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hybridrec.serving.deps import get_state
from hybridrec.serving.state import AppState

__all__ = ["require_admin"]

_bearer = HTTPBearer(auto_error=False, description="HYBRIDREC_ADMIN_TOKEN")


def require_admin(
    request: Request,
    state: Annotated[AppState, Depends(get_state)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Let the request through only with the configured bearer token.

    Raises:
        HTTPException: 404 when admin routes are off, 401 without a token, 403 when wrong.
    """
    token = state.settings.admin_token
    if token is None or not token.get_secret_value():
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"{request.url.path} is off: set HYBRIDREC_ADMIN_TOKEN to enable admin routes",
        )
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    given = credentials.credentials.encode("utf-8")
    if not hmac.compare_digest(given, token.get_secret_value().encode("utf-8")):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "invalid bearer token")
