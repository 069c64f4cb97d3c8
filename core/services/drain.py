"""Graceful drain: count in-flight calls; once draining, refuse new ones (health checks excepted)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from core.errors import ShuttingDown
from core.services.wrap import wrap_around

_ALWAYS_OPEN = "/grpc.health.v1."


class DrainInterceptor(grpc.aio.ServerInterceptor):
    """Sits outermost so that a refused call never reaches auth or the servicers."""

    def __init__(self) -> None:
        self._draining = False
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def active(self) -> int:
        return self._active

    def begin(self) -> None:
        self._draining = True

    async def wait_idle(self, within: float) -> bool:
        """True when every in-flight call finished within `within` seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), within)
        except TimeoutError:
            return False
        return True

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(_ALWAYS_OPEN):
            return handler
        return wrap_around(handler, self._counted)

    def _enter(self) -> None:
        if self._draining:
            raise ShuttingDown("the server is shutting down; retry on another instance")
        self._active += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._active -= 1
        if self._active == 0:
            self._idle.set()

    @contextlib.asynccontextmanager
    async def _counted(
        self, _request: Any, _context: grpc.aio.ServicerContext
    ) -> AsyncIterator[None]:
        self._enter()
        try:
            yield
        finally:
            self._leave()
