"""POST /v1/completions: thin handler over the core's Generate RPC (raw prompt, no template)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web
from minerva.v1 import inference_pb2

from rest_bridge import translate
from rest_bridge.app_keys import CLIENT
from rest_bridge.generation import StreamChunks, respond
from rest_bridge.protocol import completion_request, parse_body, session_id


@dataclass(frozen=True)
class CompletionChunks(StreamChunks):
    """Completion stream chunks: text pieces per choice; no opening."""

    CHUNK_OBJECT: ClassVar[str] = "text_completion"

    def chunk(
        self, index: int, text: str, finish: str | None = None, fingerprint: str | None = None
    ) -> dict[str, Any]:
        return translate.completion_chunk(
            self.ids,
            text,
            index=index,
            finish=finish,
            fingerprint=fingerprint or self.fingerprint,
            with_usage_field=self.include_usage,
        )


async def create_completion(request: web.Request) -> web.StreamResponse:
    pb_request, mode = completion_request(
        parse_body(await request.read()), session_id(request.headers)
    )
    client = request.app[CLIENT]
    ids = translate.ResponseIds.new("cmpl", pb_request.model_id, time.time())
    call = client.inference.Generate(pb_request, metadata=client.metadata)
    builder = CompletionChunks(ids, mode.include_usage)

    def whole(texts: Mapping[int, str], final: inference_pb2.GenerationFinal) -> dict[str, Any]:
        return translate.completion(ids, texts, final)

    return await respond(request, call, mode, builder, whole, client.address, "prompt")


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/completions", create_completion)
