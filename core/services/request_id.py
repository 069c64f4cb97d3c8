"""The request id of every call: from `x-request-id` metadata (the bridge sends it) or fresh,
set for the handler's logs and returned in the initial metadata."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from minerva.v1 import request_ids

from core.services.wrap import wrap_around


def _incoming(details: grpc.HandlerCallDetails) -> str | None:
    for name, value in details.invocation_metadata or ():
        if name == request_ids.HEADER and isinstance(value, str):
            return value
    return None


log = logging.getLogger("core.access")


class RequestIdInterceptor(grpc.aio.ServerInterceptor):
    """Outermost, so that every log line of the call (errors included) carries the id; writes
    the access log line (method, outcome, time) when the call ends."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith("/grpc."):  # health, reflection
            return handler
        rid = request_ids.accept_or_new(_incoming(details))

        @contextlib.asynccontextmanager
        async def around(_request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
            token, started = request_ids.current.set(rid), time.perf_counter()
            try:
                await context.send_initial_metadata(((request_ids.HEADER, rid),))
                yield
            finally:
                _access(details.method, context, started)
                request_ids.current.reset(token)

        return wrap_around(handler, around)


def _access(method: str, context: grpc.aio.ServicerContext, started: float) -> None:
    code = context.code()  # None: not aborted (OK, or cancelled by the client)
    outcome = code.name if isinstance(code, grpc.StatusCode) else "OK" if code is None else code
    log.info("%s %s %.1f ms", method, outcome, (time.perf_counter() - started) * 1000)
