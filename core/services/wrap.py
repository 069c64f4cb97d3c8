"""One way for server interceptors to run code around a call: an async context manager entered
before the servicer's behaviour and left when it returns or its stream ends (closed early too).
What it yields, when not None, is shown every response message."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc

Observer = Callable[[Any], None]
Around = Callable[[Any, grpc.aio.ServicerContext], AbstractAsyncContextManager[Observer | None]]


def wrap_around(handler: grpc.RpcMethodHandler, around: Around) -> grpc.RpcMethodHandler:
    """The handler with `around(request, context)` wrapped about its unary or streaming call."""
    if handler.unary_unary is not None:
        inner_unary = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with around(request, context) as observe:
                response = await inner_unary(request, context)
                if observe is not None:
                    observe(response)
                return response

        return handler._replace(unary_unary=unary)
    if handler.unary_stream is not None:
        inner_stream = handler.unary_stream

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            # Entered left to right: the stream starts inside `around`. aclosing: a call that
            # ends early closes the inner stream now, not when it is garbage-collected.
            async with (
                around(request, context) as observe,
                contextlib.aclosing(inner_stream(request, context)) as items,
            ):
                async for item in items:
                    if observe is not None:
                        observe(item)
                    yield item

        return handler._replace(unary_stream=stream)
    return handler
