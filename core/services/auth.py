"""Optional API keys: `authorization: Bearer <key>` metadata, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from core.errors import Unauthenticated

# Probes and schema discovery stay open: they reveal nothing a key protects.
_OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


def key_matches(presented: str, keys: tuple[str, ...]) -> bool:
    """True when `presented` equals one of the keys; every key is compared, whatever matches."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(presented.encode(), key.encode())
    return found


def bearer(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str:
    for name, value in metadata or ():
        if name == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :].strip()
    return ""


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = keys

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not self._keys or details.method.startswith(_OPEN_PREFIXES):
            return handler
        if key_matches(bearer(details.invocation_metadata), self._keys):
            return handler
        return _denied(handler)


_DENIED = "missing or invalid API key (send metadata `authorization: Bearer <key>`)"


def _denied(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    # Raised, not aborted here: ErrorInterceptor (outermost) owns the error -> status table.
    async def unary(_request: Any, _context: grpc.aio.ServicerContext) -> Any:
        raise Unauthenticated(_DENIED)

    async def stream(_request: Any, _context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        raise Unauthenticated(_DENIED)
        yield  # pragma: no cover - makes this an async generator

    if handler.unary_stream is not None:
        return handler._replace(unary_stream=stream)
    return handler._replace(unary_unary=unary)
