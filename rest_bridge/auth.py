"""API-key middleware: `Authorization: Bearer KEY` on every route except /health and
/openapi.json (neither names an address, a key or a model).

With admin keys configured, an admin caller's core calls carry the core admin key, so that the
core (which enforces roles) lets it administer models; client callers' calls carry the client
core key, and model administration through them is refused by the core (403).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from contextvars import ContextVar

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from rest_bridge.errors import ApiError

EXEMPT_PATHS = frozenset({"/health", "/openapi.json"})

# The core key this request's gRPC calls use instead of the default one (an admin caller's).
core_key_override: ContextVar[str | None] = ContextVar("core_key_override", default=None)


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


def auth_middleware(
    keys: Sequence[str], admin_keys: Sequence[str] = (), core_admin_key: str | None = None
) -> Middleware:
    """Builds the middleware for these keys; callers add it only when keys are set."""
    client_keys, admins = tuple(keys), tuple(admin_keys)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in EXEMPT_PATHS:
            return await handler(request)
        token = bearer_token(request.headers.get("Authorization"))
        is_admin = token is not None and key_matches(token, admins)
        if token is None or not (is_admin or key_matches(token, client_keys)):
            raise ApiError(
                401,
                "invalid or missing API key (send Authorization: Bearer <key>)",
                code="invalid_api_key",
            )
        if not (is_admin and core_admin_key):
            return await handler(request)
        reset = core_key_override.set(core_admin_key)
        try:
            return await handler(request)
        finally:
            core_key_override.reset(reset)

    return middleware
