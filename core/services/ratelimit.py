"""Rate limits on the core's inference calls: a token bucket per caller (its API key, or its
address when no keys are set); over the limit a call is RESOURCE_EXHAUSTED with retry-after and x-ratelimit-*
trailing metadata, and every admitted call carries the same facts in its trailing metadata."""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from minerva.v1.ratelimit import RateLimiter, TokenMeter

from core.errors import RateLimited
from core.services.auth import bearer
from core.services.wrap import Observer, wrap_around

# What is counted: the inference calls. Model listing and administration are not (a gateway
# polls ListModels; LoadModel is an admin's), nor are probes and reflection.
COUNTED_PREFIX = "/minerva.v1.InferenceService/"


def peer_host(peer: str) -> str:
    """The host of a gRPC peer string: `ipv4:1.2.3.4:5`, `ipv6:[::1]:5`, `unix:/path`; grpcio
    percent-encodes an IPv6 peer's brackets (`ipv6:%5B::1%5D:5`)."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return urllib.parse.unquote(rest).rpartition(":")[0].strip("[]")
    return peer


class RateLimitInterceptor(grpc.aio.ServerInterceptor):
    """Admits or refuses each call before work starts; charges its tokens as they are reported.
    Runs after authentication, so a key here is a valid one."""

    def __init__(self, limiter: RateLimiter, keyed: bool) -> None:
        self._limiter = limiter
        self._keyed = keyed

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(COUNTED_PREFIX):
            return handler
        key = bearer(details.invocation_metadata) if self._keyed else None
        limiter = self._limiter

        @contextlib.asynccontextmanager
        async def limited(
            _request: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Observer]:
            address = None if key else peer_host(context.peer())
            quota = limiter.admit(key, address)
            facts = quota.facts()
            if not quota.allowed:
                raise RateLimited(quota.message(), facts=facts)
            context.set_trailing_metadata(tuple(facts.items()))
            meter = TokenMeter()
            try:
                yield meter.see
            finally:  # at the end, or when the call is cut short
                limiter.charge(key, address, meter.tokens)

        return wrap_around(handler, limited)
