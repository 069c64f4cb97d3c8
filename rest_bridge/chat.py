"""POST /v1/chat/completions: thin handler over the core's Chat RPC."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web
from minerva.v1 import inference_pb2

from rest_bridge import logprobs as lp
from rest_bridge import routing, tools, translate
from rest_bridge.body import parse_body
from rest_bridge.core_client import CoreClient
from rest_bridge.generation import StreamChunks, respond
from rest_bridge.protocol import chat_request, session_id


@dataclass(frozen=True)
class ChatChunks(StreamChunks):
    """Chat stream chunks: each choice opens with the assistant role, then content deltas."""

    CHUNK_OBJECT: ClassVar[str] = "chat.completion.chunk"

    def opening(self, index: int) -> list[dict[str, Any]]:
        return [self._delta(index, {"role": "assistant", "content": ""})]

    def text(self, index: int, text: str, picked: lp.SampledLogprobs) -> dict[str, Any]:
        # With logprobs, a piece may be empty: its tokens' text is still held back.
        shown = lp.chat(picked) if self.logprobs else None
        return self._delta(index, {"content": text}, logprobs=shown)

    def tool_calls(
        self, index: int, deltas: Sequence[inference_pb2.ToolCallDelta]
    ) -> list[dict[str, Any]]:
        return [self._delta(index, {"tool_calls": tools.delta_calls(deltas)})]

    def chunk(
        self, index: int, text: str, finish: str | None = None, fingerprint: str | None = None
    ) -> dict[str, Any]:
        return self._delta(index, {"content": text} if text else {}, finish, fingerprint)

    def _delta(
        self,
        index: int,
        delta: dict[str, Any],
        finish: str | None = None,
        fingerprint: str | None = None,
        logprobs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return translate.chat_chunk(
            self.ids,
            delta,
            index=index,
            finish=finish,
            fingerprint=fingerprint or self.fingerprint,
            with_usage_field=self.include_usage,
            logprobs=logprobs,
        )


async def create_chat_completion(request: web.Request) -> web.StreamResponse:
    pb_request, mode = chat_request(parse_body(await request.read()), session_id(request.headers))
    ids = translate.ResponseIds.new("chatcmpl", pb_request.model_id, time.time())
    builder = ChatChunks(ids, mode.include_usage, logprobs=pb_request.sampling.logprobs)

    def whole(events: list[translate.GenerationEvent]) -> dict[str, Any]:
        picked = lp.collect(events) if builder.logprobs else None
        texts, final = translate.collect(events)
        return translate.chat_completion(ids, texts, final, picked, tools.collect_calls(events))

    def start(core: CoreClient) -> Any:
        return core.inference.Chat(pb_request, metadata=core.metadata)

    where, key = routing.target_label(request), routing.conversation(pb_request)
    return await respond(request, start, mode, builder, whole, where, "messages", key)


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", create_chat_completion)
