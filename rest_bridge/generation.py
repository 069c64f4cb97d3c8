"""The flow chat and completions share: call the core, then stream SSE chunks or one object."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Self

from aiohttp import web
from minerva.v1 import inference_pb2
from minerva.v1.ratelimit import TokenMeter

from rest_bridge import logprobs as lp
from rest_bridge import ratelimit, routing, sse, translate
from rest_bridge.app_keys import METRICS
from rest_bridge.errors import translate_grpc_errors
from rest_bridge.protocol import StreamMode


@dataclass(frozen=True)
class StreamChunks(ABC):
    """One answer's stream chunks: each choice's opening and text pieces, one finish chunk per
    choice, then usage when asked for. Endpoints say what a chunk and an opening look like."""

    CHUNK_OBJECT: ClassVar[str]

    ids: translate.ResponseIds
    include_usage: bool
    # The model file's fingerprint, known from the stream's first message on.
    fingerprint: str | None = None
    # Whether the request asked for logprobs: text chunks then carry their tokens'.
    logprobs: bool = False

    def with_fingerprint(self, fingerprint: str | None) -> Self:
        return replace(self, fingerprint=fingerprint)

    def opening(self, index: int) -> list[dict[str, Any]]:
        return []

    @abstractmethod
    def text(self, index: int, text: str, picked: lp.SampledLogprobs) -> dict[str, Any]:
        """Choice `index`'s piece of text and (when asked for) its tokens' logprobs."""

    def tool_calls(
        self, index: int, deltas: Sequence[inference_pb2.ToolCallDelta]
    ) -> list[dict[str, Any]]:
        """Choice `index`'s pieces of tool calls; only chat answers have any."""
        return []

    def closing(self, final: inference_pb2.GenerationFinal) -> list[dict[str, Any]]:
        chunks = [
            self.chunk(end.index, "", translate.finish_reason(end.finish_reason), final.fingerprint)
            for end in translate.choice_ends(final)
        ]
        if self.include_usage:
            chunks.append(translate.usage_chunk(self.ids, self.CHUNK_OBJECT, final))
        return chunks

    @abstractmethod
    def chunk(
        self, index: int, text: str, finish: str | None = None, fingerprint: str | None = None
    ) -> dict[str, Any]:
        """Choice `index`'s chunk: a text piece, or no text and its finish reason."""


async def stream_chunks(
    call: Any,
    builder: StreamChunks,
    address: str,
    input_name: str,
    on_final: Callable[[inference_pb2.GenerationFinal], None] = lambda final: None,
    on_event: Callable[[Any], None] = lambda event: None,
) -> AsyncGenerator[dict[str, Any], None]:
    """Yields nothing until the core's first message, so early errors keep their status.
    `on_event` sees each of the core's messages as it arrives."""
    started = False
    opened: set[int] = set()
    async with translate_grpc_errors(address, input_name):
        async for event in call:
            on_event(event)
            if not started:
                started = True
                builder = builder.with_fingerprint(_fingerprint(event))
            if event.WhichOneof("event") == "final":
                on_final(event.final)
            for chunk in _event_chunks(builder, event, opened):
                yield chunk


def _event_chunks(builder: StreamChunks, event: Any, opened: set[int]) -> list[dict[str, Any]]:
    """One core message as chunks; a choice's opening goes before anything else of it."""
    kind = event.WhichOneof("event")
    if kind == "chunk":
        piece = event.chunk
        chunks = _open(builder, piece.index, opened)
        # Tokens whose text is held back (a partial character, a possible stop) still
        # bring their logprobs.
        if piece.text or piece.logprobs:
            chunks.append(builder.text(piece.index, piece.text, piece.logprobs))
        if piece.tool_calls:
            chunks.extend(builder.tool_calls(piece.index, piece.tool_calls))
        return chunks
    if kind == "final":
        ends = translate.choice_ends(event.final)
        openings = [chunk for end in ends for chunk in _open(builder, end.index, opened)]
        return openings + builder.closing(event.final)
    return []


def _open(builder: StreamChunks, index: int, opened: set[int]) -> list[dict[str, Any]]:
    if index in opened:
        return []
    opened.add(index)
    return builder.opening(index)


def _fingerprint(event: Any) -> str | None:
    """The core sets it on a stream's first message, whichever kind that is."""
    message = event.chunk if event.WhichOneof("event") == "chunk" else event.final
    return message.fingerprint or None


async def respond(
    request: web.Request,
    start: routing.Start,
    mode: StreamMode,
    builder: StreamChunks,
    whole: Callable[[list[translate.GenerationEvent]], dict[str, Any]],
    address: str,
    input_name: str,
    affinity: str = "",
) -> web.StreamResponse:
    """Answers one generation call, started by `start` on the core the router picks for the
    model and conversation `affinity`, once that core has room (admission); the call is
    cancelled however the handler ends, so a client that disconnects (aiohttp cancels the
    handler) stops the core's token loop."""
    counters = request.app[METRICS]
    gaps = counters.token_gaps(builder.ids.model)

    def on_final(final: inference_pb2.GenerationFinal) -> None:
        counters.observe_generation(builder.ids.model, final)

    def saw(event: translate.GenerationEvent) -> None:
        gaps.saw(event)
        meter.see(event)

    meter = TokenMeter()
    with routing.generation(request, builder.ids.model, affinity, start) as call:
        try:
            if mode.stream:
                chunks = stream_chunks(call, builder, address, input_name, on_final, saw)
                return await sse.stream_events(request, chunks)
            events: list[translate.GenerationEvent] = []
            async with translate_grpc_errors(address, input_name):
                async for event in call:
                    saw(event)
                    events.append(event)
            for event in events:
                if event.WhichOneof("event") == "final":
                    on_final(event.final)
            return web.json_response(whole(events))
        finally:
            call.cancel()
            ratelimit.charge(request, meter.tokens)  # cut short too: what was generated
