"""POST /v1/chat/completions: thin handler over the core's Chat RPC."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Self

from aiohttp import web
from minerva.v1 import inference_pb2

from rest_bridge import translate
from rest_bridge.app_keys import CLIENT
from rest_bridge.generation import respond
from rest_bridge.protocol import chat_request, parse_body

CHUNK_OBJECT = "chat.completion.chunk"


@dataclass(frozen=True)
class ChatChunks:
    """Chat stream chunks: the role first, content deltas, the finish reason, then usage."""

    ids: translate.ResponseIds
    include_usage: bool
    # The model file's fingerprint, known from the stream's first message on.
    fingerprint: str | None = None

    def with_fingerprint(self, fingerprint: str | None) -> Self:
        return replace(self, fingerprint=fingerprint)

    def opening(self) -> list[dict[str, Any]]:
        return [self._chunk({"role": "assistant", "content": ""})]

    def text(self, text: str) -> dict[str, Any]:
        return self._chunk({"content": text})

    def closing(self, final: inference_pb2.GenerationFinal) -> list[dict[str, Any]]:
        last = self._chunk({}, translate.finish_reason(final.finish_reason), final.fingerprint)
        if not self.include_usage:
            return [last]
        return [last, translate.usage_chunk(self.ids, CHUNK_OBJECT, final)]

    def _chunk(
        self, delta: dict[str, Any], finish: str | None = None, fingerprint: str | None = None
    ) -> dict[str, Any]:
        return translate.chat_chunk(
            self.ids,
            delta,
            finish=finish,
            fingerprint=fingerprint or self.fingerprint,
            with_usage_field=self.include_usage,
        )


async def create_chat_completion(request: web.Request) -> web.StreamResponse:
    pb_request, mode = chat_request(parse_body(await request.read()))
    client = request.app[CLIENT]
    ids = translate.ResponseIds.new("chatcmpl", pb_request.model_id, time.time())
    call = client.inference.Chat(pb_request, metadata=client.metadata)
    builder = ChatChunks(ids, mode.include_usage)

    def whole(text: str, final: inference_pb2.GenerationFinal) -> dict[str, Any]:
        return translate.chat_completion(ids, text, final)

    return await respond(request, call, mode, builder, whole, client.address, "messages")


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", create_chat_completion)
