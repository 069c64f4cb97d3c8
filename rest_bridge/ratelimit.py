"""Rate limits on the bridge: a token bucket per caller (its API key, or its address when no keys
are set). Over the limit a request is a 429 with Retry-After; every counted response carries
OpenAI's x-ratelimit-* headers; the tokens a request used are charged when the core reports them."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from minerva.v1.ratelimit import Quota, RateLimiter

from rest_bridge.auth import EXEMPT_PATHS as PUBLIC_PATHS
from rest_bridge.auth import bearer_token
from rest_bridge.errors import ApiError

# Probes and scrapes are never counted: a monitor must not use up a client's requests. Nor are
# the routes open without a key: every counted request passed auth, so a bearer token here is a
# valid key, and made-up tokens cannot fill the limiter with buckets (evicting real callers').
EXEMPT_PATHS = frozenset({"/metrics"}) | PUBLIC_PATHS


@dataclass(frozen=True)
class Caller:
    """Who a request is counted against, and the limiter that counts it."""

    limiter: RateLimiter
    key: str | None
    address: str | None

    def charge(self, tokens: int) -> None:
        self.limiter.charge(self.key, self.address, tokens)


QUOTA = web.RequestKey("rate_quota", Quota)
CALLER = web.RequestKey("rate_caller", Caller)


def rate_limit_middleware(limiter: RateLimiter, keyed: bool) -> Middleware:
    """Counts each request against its caller; runs after auth, so a key here is a valid one."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in EXEMPT_PATHS:
            return await handler(request)
        key = bearer_token(request.headers.get("Authorization")) if keyed else None
        caller = Caller(limiter, key, None if key else request.remote)
        quota = limiter.admit(caller.key, caller.address)
        request[QUOTA] = quota
        if not quota.allowed:
            raise ApiError(
                429,
                quota.message(),
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers=quota.facts(),
            )
        request[CALLER] = caller
        return await handler(request)

    return middleware


def charge(request: web.Request, tokens: int) -> None:
    """Charges a finished request's tokens (prompt + completion) to its caller, if counted."""
    caller = request.get(CALLER)
    if caller is not None:
        caller.charge(tokens)


async def add_rate_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the caller's standing on every counted response, streams too."""
    quota = request.get(QUOTA)
    if quota is not None:
        response.headers.update(quota.facts())
