"""The one table from domain errors to gRPC status codes, applied by a server interceptor."""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import grpc

from core import errors

log = logging.getLogger(__name__)

# Trailing-metadata key naming the request field at fault, for clients to point at.
PARAM_KEY = "minerva-param"
# grpc's own aborts and usage errors must surface unchanged.
_PASS_THROUGH = (grpc.aio.AbortError, grpc.aio.UsageError)

STATUS_BY_ERROR: dict[type[errors.MinervaError], grpc.StatusCode] = {
    errors.ModelNotFound: grpc.StatusCode.NOT_FOUND,
    errors.InvalidModelFile: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ModelLoadError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.UnsupportedModel: grpc.StatusCode.FAILED_PRECONDITION,
    errors.InsufficientStorage: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.ModelBusy: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ShuttingDown: grpc.StatusCode.UNAVAILABLE,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}


def status_for(exc: errors.MinervaError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        code = STATUS_BY_ERROR.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


async def abort_with(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    """Turn an exception escaping a handler into a status; unknown ones become a generic INTERNAL."""
    if isinstance(exc, errors.MinervaError):
        trailing = [(PARAM_KEY, exc.param)] if exc.param else []
        trailing += exc.facts.items()
        if trailing:
            context.set_trailing_metadata(tuple(trailing))
        await context.abort(status_for(exc), exc.message)
    log.exception("unexpected error in %s", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler so domain errors become their status code, once, at the boundary."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        # The method name is known here, so log lines need no private context attributes.
        method = handler_call_details.method
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=_wrap_unary(handler.unary_unary, method))
        if handler.unary_stream is not None:
            # A stream written with context.write (grpc.health.v1 Watch, which client-side
            # health checking calls) is a coroutine, not an async generator.
            stream = handler.unary_stream
            wrap = _wrap_stream if inspect.isasyncgenfunction(stream) else _wrap_unary
            return handler._replace(unary_stream=wrap(stream, method))
        return handler


def _wrap_unary(
    behavior: Callable[..., Awaitable[Any]], method: str
) -> Callable[..., Awaitable[Any]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(request, context)
        except _PASS_THROUGH:
            raise
        except Exception as exc:
            await abort_with(context, exc, method)

    return wrapped


def _wrap_stream(
    behavior: Callable[..., AsyncGenerator[Any, None]], method: str
) -> Callable[..., AsyncGenerator[Any, None]]:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> AsyncGenerator[Any, None]:
        try:
            # aclosing: when the call ends early the inner stream is closed now, not by the GC.
            async with contextlib.aclosing(behavior(request, context)) as items:
                async for item in items:
                    yield item
        except _PASS_THROUGH:
            raise
        except Exception as exc:
            await abort_with(context, exc, method)

    return wrapped
