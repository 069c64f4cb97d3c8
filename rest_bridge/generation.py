"""The flow chat and completions share: call the core, then stream SSE chunks or one object."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any, Protocol

from aiohttp import web

from rest_bridge import sse, translate
from rest_bridge.errors import translate_grpc_errors
from rest_bridge.protocol import StreamMode


class ChunkBuilder(Protocol):
    """Turns the core's events into one endpoint's stream chunks."""

    def with_fingerprint(self, fingerprint: str | None) -> ChunkBuilder: ...

    def opening(self) -> list[dict[str, Any]]: ...

    def text(self, text: str) -> dict[str, Any]: ...

    def closing(self, final: translate.inference_pb2.GenerationFinal) -> list[dict[str, Any]]: ...


async def stream_chunks(
    call: Any, builder: ChunkBuilder, address: str, input_name: str
) -> AsyncGenerator[dict[str, Any], None]:
    """Yields nothing until the core's first message, so early errors keep their status."""
    opened = False
    async with translate_grpc_errors(address, input_name):
        async for event in call:
            if not opened:
                opened = True
                builder = builder.with_fingerprint(_fingerprint(event))
                for chunk in builder.opening():
                    yield chunk
            kind = event.WhichOneof("event")
            if kind == "chunk" and event.chunk.text:
                yield builder.text(event.chunk.text)
            elif kind == "final":
                for chunk in builder.closing(event.final):
                    yield chunk


def _fingerprint(event: Any) -> str | None:
    """The core sets it on a stream's first message, whichever kind that is."""
    message = event.chunk if event.WhichOneof("event") == "chunk" else event.final
    return message.fingerprint or None


async def respond(
    request: web.Request,
    call: Any,
    mode: StreamMode,
    builder: ChunkBuilder,
    whole: Callable[[str, translate.inference_pb2.GenerationFinal], dict[str, Any]],
    address: str,
    input_name: str,
) -> web.StreamResponse:
    """Answers one generation call; the call is cancelled however the handler ends, so a client
    that disconnects (aiohttp cancels the handler) stops the core's token loop."""
    try:
        if mode.stream:
            return await sse.stream_events(
                request, stream_chunks(call, builder, address, input_name)
            )
        async with translate_grpc_errors(address, input_name):
            events = [event async for event in call]
        return web.json_response(whole(*translate.collect(events)))
    finally:
        call.cancel()
