"""API-key middleware: `Authorization: Bearer KEY` on every route except /health."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from rest_bridge.errors import ApiError

EXEMPT_PATHS = frozenset({"/health"})


def key_matches(presented: str, keys: Sequence[str]) -> bool:
    """Constant-time check against every key; no early exit, so timing says nothing."""
    candidate = presented.encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate, key.encode())
    return matched


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def auth_middleware(keys: Sequence[str]) -> Middleware:
    """Builds the middleware for these keys; callers add it only when keys are set."""
    frozen_keys = tuple(keys)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in EXEMPT_PATHS:
            token = bearer_token(request.headers.get("Authorization"))
            if token is None or not key_matches(token, frozen_keys):
                raise ApiError(
                    401,
                    "invalid or missing API key (send Authorization: Bearer <key>)",
                    code="invalid_api_key",
                )
        return await handler(request)

    return middleware
