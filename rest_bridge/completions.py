"""POST /v1/completions: thin handler over the core's Generate RPC (raw prompt, no template)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aiohttp import web

from rest_bridge import logprobs as lp
from rest_bridge import routing, translate
from rest_bridge.body import parse_body
from rest_bridge.core_client import CoreClient
from rest_bridge.generation import StreamChunks, respond
from rest_bridge.protocol import completion_request, session_id


@dataclass(frozen=True)
class CompletionChunks(StreamChunks):
    """Completion stream chunks: text pieces per choice; no opening."""

    CHUNK_OBJECT: ClassVar[str] = "text_completion"

    # Characters of each choice's tokens sent so far, where the next text_offset starts; the
    # one piece of state that outlives a chunk, so it lives with this answer's builder.
    offsets: dict[int, int] = field(default_factory=dict)

    def text(self, index: int, text: str, picked: lp.SampledLogprobs) -> dict[str, Any]:
        if not self.logprobs:
            return self.chunk(index, text)
        start = self.offsets.get(index, 0)
        self.offsets[index] = start + lp.text_length(picked)
        return self.chunk(index, text, logprobs=lp.completion(picked, start))

    def chunk(
        self,
        index: int,
        text: str,
        finish: str | None = None,
        fingerprint: str | None = None,
        logprobs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return translate.completion_chunk(
            self.ids,
            text,
            index=index,
            finish=finish,
            fingerprint=fingerprint or self.fingerprint,
            with_usage_field=self.include_usage,
            logprobs=logprobs,
        )


async def create_completion(request: web.Request) -> web.StreamResponse:
    pb_request, mode = completion_request(
        parse_body(await request.read()), session_id(request.headers)
    )
    ids = translate.ResponseIds.new("cmpl", pb_request.model_id, time.time())
    builder = CompletionChunks(ids, mode.include_usage, logprobs=pb_request.sampling.logprobs)

    def whole(events: list[translate.GenerationEvent]) -> dict[str, Any]:
        picked = lp.collect(events) if builder.logprobs else None
        return translate.completion(ids, *translate.collect(events), picked)

    def start(core: CoreClient) -> Any:
        return core.inference.Generate(pb_request, metadata=core.metadata)

    where, key = routing.target_label(request), routing.conversation(pb_request)
    return await respond(request, start, mode, builder, whole, where, "prompt", key)


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/completions", create_completion)
