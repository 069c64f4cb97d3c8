"""One timed streaming request per way in: SSE over HTTP, Minerva's gRPC, in-process llama-cpp-python."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from minerva.v1 import inference_pb2, inference_pb2_grpc

REQUEST_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class StreamResult:
    tokens: int
    ttft_s: float
    text: str = ""
    prompt_tokens: int | None = None
    cached_tokens: int | None = None


@dataclass
class _SseTally:
    """What one SSE stream has said so far."""

    start: float
    ttft_s: float = 0.0
    pieces: list[str] = field(default_factory=list)
    usage: Mapping[str, Any] = field(default_factory=dict)

    def add(self, event: Mapping[str, Any]) -> None:
        if "error" in event:
            raise RuntimeError(f"error event in the stream: {event['error']}")
        if event.get("usage"):
            self.usage = event["usage"]
        for choice in event.get("choices") or []:
            piece = choice.get("text") or (choice.get("delta") or {}).get("content")
            if piece:
                self.ttft_s = self.ttft_s or time.perf_counter() - self.start
                self.pieces.append(piece)

    def result(self) -> StreamResult:
        # Usage when the server sends it; else one token per text chunk.
        tokens = self.usage.get("completion_tokens", len(self.pieces))
        cached = (self.usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        return StreamResult(
            tokens, self.ttft_s, "".join(self.pieces), self.usage.get("prompt_tokens"), cached
        )


async def stream_sse(
    session: aiohttp.ClientSession,
    url: str,
    body: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
) -> StreamResult:
    """One OpenAI /v1/completions or /v1/chat/completions stream, timed from the POST."""
    tally = _SseTally(time.perf_counter())
    async with session.post(url, json=body, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}: {await response.text()}")
        async for raw in response.content:
            line = raw.decode().strip()
            if line.startswith("data: ") and line != "data: [DONE]":
                tally.add(json.loads(line.removeprefix("data: ")))
    return tally.result()


async def stream_ndjson(
    session: aiohttp.ClientSession, url: str, body: Mapping[str, Any]
) -> StreamResult:
    """One Ollama /api/chat stream, timed from the POST."""
    start, ttft, pieces, tokens = time.perf_counter(), 0.0, [], 0
    async with session.post(url, json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}: {await response.text()}")
        async for raw in response.content:
            event = json.loads(raw) if raw.strip() else {}
            if "error" in event:
                raise RuntimeError(f"error line in the stream: {event['error']}")
            piece = (event.get("message") or {}).get("content")
            if piece:
                ttft = ttft or time.perf_counter() - start
                pieces.append(piece)
            if event.get("done"):
                tokens = int(event.get("eval_count", len(pieces)))
    return StreamResult(tokens, ttft, "".join(pieces))


async def stream_grpc(
    stub: inference_pb2_grpc.InferenceServiceStub, model: str, prompt: str, max_tokens: int
) -> StreamResult:
    request = inference_pb2.GenerateRequest(
        model_id=model,
        text=prompt,
        sampling=inference_pb2.SamplingParams(
            temperature=0, repeat_penalty=1.0, max_tokens=max_tokens
        ),
    )
    start = time.perf_counter()
    ttft, tokens, pieces = 0.0, 0, []
    async for event in stub.Generate(request, timeout=REQUEST_TIMEOUT_S):
        if event.WhichOneof("event") == "chunk" and event.chunk.text:
            ttft = ttft or time.perf_counter() - start
            pieces.append(event.chunk.text)
        elif event.WhichOneof("event") == "final":
            tokens = event.final.usage.completion_tokens
    return StreamResult(tokens, ttft, "".join(pieces))


class InProcess:
    """llama-cpp-python's high-level `Llama` in this process: one request at a time."""

    def __init__(self, llm: Any, max_tokens: int) -> None:
        self._llm = llm
        self._max_tokens = max_tokens

    async def stream(self, prompt: str) -> StreamResult:
        return await asyncio.to_thread(self._stream, prompt)

    def _stream(self, prompt: str) -> StreamResult:
        start = time.perf_counter()
        ttft, pieces = 0.0, []
        chunks = self._llm.create_completion(
            prompt, max_tokens=self._max_tokens, temperature=0.0, repeat_penalty=1.0, stream=True
        )
        for chunk in chunks:
            text = chunk["choices"][0]["text"]
            if chunk["choices"][0]["finish_reason"] is None:  # the closing chunk has no token
                ttft = ttft or time.perf_counter() - start
                pieces.append(text)
        return StreamResult(len(pieces), ttft, "".join(pieces))


@contextmanager
def in_process(model: Path, threads: int, context: int, max_tokens: int) -> Iterator[InProcess]:
    """The model loaded in this process, freed on exit so no other llama.cpp competes with it."""
    from llama_cpp import Llama  # only this path needs it in the bench process

    llm = Llama(
        str(model), n_ctx=context, n_threads=threads, n_threads_batch=threads, verbose=False
    )
    try:
        yield InProcess(llm, max_tokens)
    finally:
        llm.close()
