"""POST /v1/completions: thin handler over the core's Generate RPC (raw prompt, no template)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Self

from aiohttp import web
from minerva.v1 import inference_pb2

from rest_bridge import translate
from rest_bridge.app_keys import CLIENT
from rest_bridge.generation import respond
from rest_bridge.protocol import completion_request, parse_body

CHUNK_OBJECT = "text_completion"


@dataclass(frozen=True)
class CompletionChunks:
    """Completion stream chunks: text pieces, the finish reason in the last, then usage."""

    ids: translate.ResponseIds
    include_usage: bool
    # The model file's fingerprint, known from the stream's first message on.
    fingerprint: str | None = None

    def with_fingerprint(self, fingerprint: str | None) -> Self:
        return replace(self, fingerprint=fingerprint)

    def opening(self) -> list[dict[str, Any]]:
        return []

    def text(self, text: str) -> dict[str, Any]:
        return self._chunk(text)

    def closing(self, final: inference_pb2.GenerationFinal) -> list[dict[str, Any]]:
        last = self._chunk("", translate.finish_reason(final.finish_reason), final.fingerprint)
        if not self.include_usage:
            return [last]
        return [last, translate.usage_chunk(self.ids, CHUNK_OBJECT, final)]

    def _chunk(
        self, text: str, finish: str | None = None, fingerprint: str | None = None
    ) -> dict[str, Any]:
        return translate.completion_chunk(
            self.ids,
            text,
            finish=finish,
            fingerprint=fingerprint or self.fingerprint,
            with_usage_field=self.include_usage,
        )


async def create_completion(request: web.Request) -> web.StreamResponse:
    pb_request, mode = completion_request(parse_body(await request.read()))
    client = request.app[CLIENT]
    ids = translate.ResponseIds.new("cmpl", pb_request.model_id, time.time())
    call = client.inference.Generate(pb_request, metadata=client.metadata)
    builder = CompletionChunks(ids, mode.include_usage)

    def whole(text: str, final: inference_pb2.GenerationFinal) -> dict[str, Any]:
        return translate.completion(ids, text, final)

    return await respond(request, call, mode, builder, whole, client.address, "prompt")


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/completions", create_completion)
