"""minerva.v1.InferenceService: streaming generation and chat, embeddings, tokenizer."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TypeVar

import grpc
from minerva.v1 import inference_pb2, inference_pb2_grpc

from core.chat.tools.stream import ChatChunk, ChatEvent
from core.chat.types import ToolRequest
from core.engine.types import GenerationResult
from core.inference import Inference, RequestOptions
from core.services.convert import (
    chunk_fields,
    context_size_from_pb,
    embed_inputs_from_pb,
    final_fields,
    keep_alive_from_pb,
    messages_from_pb,
    prompt_from_pb,
    threads_from_pb,
    tool_request_from_pb,
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
            options=_options(request),
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
            options=_options(request),
            tools=_tool_request(request),
        )
        async for message in self._stream(request.model_id, events, inference_pb2.ChatResponse):
            yield message

    async def ApplyChatTemplate(
        self, request: inference_pb2.ApplyChatTemplateRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.ApplyChatTemplateResponse:
        add = request.add_generation_prompt if request.HasField("add_generation_prompt") else True
        prompt, tokens = await self._inference.apply_chat_template(
            request.model_id,
            messages_from_pb(list(request.messages)),
            tools=_tool_request(request),
            add_generation_prompt=add,
        )
        return inference_pb2.ApplyChatTemplateResponse(prompt=prompt, prompt_tokens=tokens)

    async def _stream(
        self, model_id: str, events: AsyncGenerator[ChatEvent, None], make: Callable[..., R]
    ) -> AsyncIterator[R]:
        fp = ""
        async with contextlib.aclosing(events):  # closing it now stops the token loop at once
            async for event in events:
                if isinstance(event, GenerationResult):
                    yield make(final=final_fields(event, fp or self._fingerprint(model_id)))
                    continue
                first = not fp  # the fingerprint is known once the model is loaded
                fp = fp or self._fingerprint(model_id)
                shown = fp if first else ""
                if isinstance(event, ChatChunk):
                    yield make(chunk=chunk_fields(event.chunk, shown, event.tool_calls))
                else:
                    yield make(chunk=chunk_fields(event, shown))

    def _fingerprint(self, model_id: str) -> str:
        return self._inference.fingerprint(model_id)

    async def Embed(
        self, request: inference_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.EmbedResponse:
        normalize = request.normalize if request.HasField("normalize") else True
        vectors, tokens = await self._inference.embed(
            request.model_id,
            embed_inputs_from_pb(list(request.inputs)),
            normalize=normalize,
            keep_alive=keep_alive_from_pb(request),
            truncate=request.truncate,
            context_size=context_size_from_pb(request),
            threads=threads_from_pb(request),
        )
        return inference_pb2.EmbedResponse(
            embeddings=[inference_pb2.Embedding(values=v) for v in vectors],
            usage=inference_pb2.Usage(prompt_tokens=tokens),
        )

    async def Tokenize(
        self, request: inference_pb2.TokenizeRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.TokenizeResponse:
        add_special = request.add_special if request.HasField("add_special") else True
        ids, pieces = await self._inference.tokenize(
            request.model_id,
            request.text,
            add_special=add_special,
            parse_special=request.parse_special,
            with_pieces=request.with_pieces,
        )
        return inference_pb2.TokenizeResponse(token_ids=ids, pieces=pieces)

    async def Detokenize(
        self, request: inference_pb2.DetokenizeRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.DetokenizeResponse:
        text = await self._inference.detokenize(request.model_id, list(request.token_ids))
        return inference_pb2.DetokenizeResponse(text=text)


def _tool_request(
    request: inference_pb2.ChatRequest | inference_pb2.ApplyChatTemplateRequest,
) -> ToolRequest:
    return tool_request_from_pb(
        list(request.tools),
        request.tool_choice if request.HasField("tool_choice") else None,
        request.parallel_tool_calls if request.HasField("parallel_tool_calls") else None,
    )


def _options(request: inference_pb2.GenerateRequest | inference_pb2.ChatRequest) -> RequestOptions:
    return RequestOptions(
        session=request.session_id,
        keep_alive=keep_alive_from_pb(request),
        context_limit=request.context_limit if request.HasField("context_limit") else None,
        context_size=context_size_from_pb(request),
        threads=threads_from_pb(request),
    )
