"""minerva.v1.InferenceService: streaming generation and chat, embeddings, tokenizer."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TypeVar

import grpc
from minerva.v1 import inference_pb2, inference_pb2_grpc

from core.engine.types import GenerationEvent, TokenChunk
from core.inference import Inference
from core.services.convert import (
    chunk_fields,
    embed_inputs_from_pb,
    final_fields,
    messages_from_pb,
    prompt_from_pb,
)
from core.services.sampling import sampling_from_pb

R = TypeVar("R", inference_pb2.GenerateResponse, inference_pb2.ChatResponse)


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, inference: Inference) -> None:
        self._inference = inference

    async def Generate(
        self, request: inference_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[inference_pb2.GenerateResponse]:
        sampling = sampling_from_pb(request.sampling if request.HasField("sampling") else None)
        add_special = request.add_special if request.HasField("add_special") else True
        events = self._inference.generate(
            request.model_id,
            prompt_from_pb(request),
            add_special=add_special,
            sampling=sampling,
            session=request.session_id,
        )
        async for message in self._stream(request.model_id, events, inference_pb2.GenerateResponse):
            yield message

    async def Chat(
        self, request: inference_pb2.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[inference_pb2.ChatResponse]:
        sampling = sampling_from_pb(request.sampling if request.HasField("sampling") else None)
        events = self._inference.chat(
            request.model_id,
            messages_from_pb(list(request.messages)),
            sampling,
            session=request.session_id,
        )
        async for message in self._stream(request.model_id, events, inference_pb2.ChatResponse):
            yield message

    async def _stream(
        self, model_id: str, events: AsyncGenerator[GenerationEvent, None], make: Callable[..., R]
    ) -> AsyncIterator[R]:
        fp = ""
        async with contextlib.aclosing(events):  # closing it now stops the token loop at once
            async for event in events:
                if not fp:  # known once the model is loaded, i.e. by the first event
                    fp = self._inference.fingerprint(model_id)
                    if isinstance(event, TokenChunk):
                        yield make(chunk=chunk_fields(event, fp))
                        continue
                if isinstance(event, TokenChunk):
                    yield make(chunk=chunk_fields(event))
                else:
                    yield make(final=final_fields(event, fp))

    async def Embed(
        self, request: inference_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.EmbedResponse:
        normalize = request.normalize if request.HasField("normalize") else True
        vectors, tokens = await self._inference.embed(
            request.model_id, embed_inputs_from_pb(list(request.inputs)), normalize=normalize
        )
        return inference_pb2.EmbedResponse(
            embeddings=[inference_pb2.Embedding(values=v) for v in vectors],
            usage=inference_pb2.Usage(prompt_tokens=tokens),
        )

    async def Tokenize(
        self, request: inference_pb2.TokenizeRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.TokenizeResponse:
        add_special = request.add_special if request.HasField("add_special") else True
        ids = await self._inference.tokenize(
            request.model_id,
            request.text,
            add_special=add_special,
            parse_special=request.parse_special,
        )
        return inference_pb2.TokenizeResponse(token_ids=ids)

    async def Detokenize(
        self, request: inference_pb2.DetokenizeRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.DetokenizeResponse:
        text = await self._inference.detokenize(request.model_id, list(request.token_ids))
        return inference_pb2.DetokenizeResponse(text=text)
