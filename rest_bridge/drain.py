"""Graceful shutdown: once draining, new requests get 503 with Retry-After while the requests in
flight (streams included) finish, up to the grace period."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from rest_bridge.errors import ApiError


class Drain:
    """Counts requests in flight; refuses new ones once `start()` was called."""

    def __init__(self) -> None:
        self.draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def start(self) -> None:
        self.draining = True

    async def wait_idle(self, grace_s: float) -> bool:
        """True when every request in flight finished within the grace period."""
        deadline = time.monotonic() + grace_s
        while self._in_flight and time.monotonic() < deadline:
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        return self._in_flight == 0

    def middleware(self) -> Any:
        @web.middleware
        async def drain_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            if self.draining:
                raise ApiError(
                    503,
                    "the server is shutting down; retry on another instance or shortly",
                    code="shutting_down",
                )
            self._in_flight += 1
            try:
                return await handler(request)
            finally:
                self._in_flight -= 1
                if not self._in_flight:
                    self._idle.set()

        return drain_middleware
