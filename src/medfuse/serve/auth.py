"""Bearer-token authentication of ``/api/*`` (``/health``, the page and the docs stay open).

The token is the ``token`` argument of :func:`~medfuse.serve.app.create_app`, else the
``MEDFUSE_TOKEN`` environment variable; with neither there is no authentication.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

TOKEN_ENV = "MEDFUSE_TOKEN"

Middleware = Callable[[Request, Any], Awaitable[Response]]


def resolve_token(token: str | None) -> str | None:
    """``token``, else ``$MEDFUSE_TOKEN``; ``None`` (no authentication) when both are empty."""
    return token or os.environ.get(TOKEN_ENV) or None


def bearer_auth(token: str | None) -> Middleware:
    """HTTP middleware answering 401 on ``/api/*`` without ``Authorization: Bearer token``."""

    async def _auth(request: Request, call_next: Any) -> Response:
        if token and request.url.path.startswith("/api/"):
            header = request.headers.get("authorization", "")
            scheme, _, given = header.partition(" ")
            if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip(), token):
                return JSONResponse({"detail": [{"loc": ["header", "authorization"],
                                                 "msg": "missing or invalid bearer token"}]},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
        response: Response = await call_next(request)
        return response

    return _auth
