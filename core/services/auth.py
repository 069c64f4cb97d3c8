"""API keys and their roles: `authorization: Bearer <key>` metadata, compared in constant time.

Client keys may generate, embed, tokenize and list. When admin keys are configured, model
administration needs one: LoadModel, UnloadModel, a keep_alive_seconds of 0 (unload once idle,
as Ollama clients send), and a context_size or threads (Ollama's num_ctx and num_thread, which
change the model for every client). Without admin keys, client keys administer too.
"""

from __future__ import annotations

import contextlib
import enum
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from core.errors import MinervaError, PermissionDenied, Unauthenticated
from core.services.wrap import wrap_around

# Probes and schema discovery stay open: they reveal nothing a key protects.
_OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")
ADMIN_METHODS = frozenset(
    {"/minerva.v1.ModelService/LoadModel", "/minerva.v1.ModelService/UnloadModel"}
)


class Role(enum.Enum):
    CLIENT = "client"
    ADMIN = "admin"


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


@dataclass(frozen=True)
class KeyRing:
    """The accepted keys; repr=False keeps them out of logs."""

    client: tuple[str, ...] = field(default=(), repr=False)
    admin: tuple[str, ...] = field(default=(), repr=False)

    @property
    def enabled(self) -> bool:
        return bool(self.client or self.admin)

    def role(self, presented: str) -> Role | None:
        """The role of a presented key; None when it is no key of ours."""
        is_admin = key_matches(presented, self.admin)
        is_client = key_matches(presented, self.client)
        if is_admin or (is_client and not self.admin):
            return Role.ADMIN
        return Role.CLIENT if is_client else None


# Request fields that change a model for every client (a reload, its threads): admin only.
_SHARED_SETTINGS = ("context_size", "threads")


def _administers(request: Any) -> str | None:
    """The field by which a request would administer its model, if any: keep_alive_seconds 0
    (unload once idle), or a context size or thread count that every client then gets."""
    if _has(request, "keep_alive_seconds") and request.keep_alive_seconds == 0:
        return "keep_alive_seconds"
    return next((name for name in _SHARED_SETTINGS if _has(request, name)), None)


def _has(request: Any, name: str) -> bool:
    try:
        return bool(request.HasField(name))
    except ValueError:  # a message without that field
        return False


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not self._keys.enabled or details.method.startswith(_OPEN_PREFIXES):
            return handler
        role = self._keys.role(bearer(details.invocation_metadata))
        if role is None:
            return _refused(handler, Unauthenticated(_DENIED))
        if role is Role.ADMIN:
            return handler
        if details.method in ADMIN_METHODS:
            name = details.method.rsplit("/", 1)[-1]
            return _refused(handler, PermissionDenied(f"{name} needs an admin key"))
        return wrap_around(handler, _no_administration)


_DENIED = "missing or invalid API key (send metadata `authorization: Bearer <key>`)"
_ADMIN_ONLY = {
    "keep_alive_seconds": "keep_alive_seconds 0 unloads the model",
    "context_size": "context_size reloads the model for every client",
    "threads": "threads changes the model's thread count for every client",
}


def _refused(handler: grpc.RpcMethodHandler, error: MinervaError) -> grpc.RpcMethodHandler:
    # Raised, not aborted here: ErrorInterceptor (outermost) owns the error -> status table.
    @contextlib.asynccontextmanager
    async def refuse(_request: Any, _context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
        # One exception object per call: a shared one would grow its traceback per request.
        raise type(error)(error.message, param=error.param)
        yield  # pragma: no cover - makes this a generator

    return wrap_around(handler, refuse)


@contextlib.asynccontextmanager
async def _no_administration(
    request: Any, _context: grpc.aio.ServicerContext
) -> AsyncIterator[None]:
    """A client's call, refused if the request would administer its model."""
    field = _administers(request)
    if field is not None:
        raise PermissionDenied(f"{_ADMIN_ONLY[field]}: that needs an admin key", param=field)
    yield
