"""The llama.cpp engine: a LlamaModel driven from asyncio through a SerialScheduler."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.engine.llama_backend import LlamaModel, LoadOptions, ProgressSink
from core.engine.scheduler import SerialScheduler
from core.engine.token_loop import run_generation
from core.engine.types import (
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    GenerationResult,
    Timings,
)
from core.errors import InvalidRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


class LlamaEngine:
    """Implements core.engine.base.Engine for GGUF models."""

    def __init__(self, model: LlamaModel, name: str, queue_size: int) -> None:
        self._model = model
        self._name = name
        self._scheduler = SerialScheduler(name, queue_size)
        # Tokenizer calls get their own thread and bound: they never wait behind a generation,
        # and the model is not freed while one runs (see busy and close).
        self._tokenizer = SerialScheduler(f"{name}-tokenizer", queue_size)
        # The most recent generation's outcome, for logs, metrics and tests.
        self.last_result: GenerationResult | None = None
        self._stop_flags: set[threading.Event] = set()
        self._aborted = False  # set for good at shutdown: later generations end at once

    @classmethod
    def load(
        cls,
        name: str,
        opts: LoadOptions,
        queue_size: int,
        progress: ProgressSink | None = None,
    ) -> LlamaEngine:
        """Blocking: load weights and create the context. Run it off the event loop."""
        return cls(LlamaModel(opts, progress), name, queue_size)

    @property
    def context_size(self) -> int:
        return self._model.n_ctx

    @property
    def vocab_size(self) -> int:
        return self._model.n_vocab

    @property
    def bos_text(self) -> str:
        return self._model.bos_text

    @property
    def eos_text(self) -> str:
        return self._model.eos_text

    @property
    def add_bos(self) -> bool:
        return self._model.add_bos

    @property
    def memory_bytes(self) -> int:
        return self._model.size_bytes

    @property
    def busy(self) -> bool:
        return self._scheduler.admitted > 0 or self._tokenizer.admitted > 0

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[GenerationEvent | _Failed] = asyncio.Queue()
        cancelled = threading.Event()
        if self._aborted:
            cancelled.set()

        def put(item: GenerationEvent | _Failed) -> None:
            loop.call_soon_threadsafe(events.put_nowait, item)

        def job() -> None:
            if cancelled.is_set():  # aborted while waiting: end the stream without running
                put(GenerationResult(FinishReason.CANCELLED, len(request.prompt), 0, 0, Timings()))
                return
            try:
                result = run_generation(self._model, request, put, cancelled)
            except BaseException as exc:  # handed to the awaiting coroutine, which re-raises
                put(_Failed(exc))
                return
            self.last_result = result
            if result.finish_reason is FinishReason.CANCELLED:
                log.info(
                    "generation cancelled: model=%s tokens=%d", self._name, result.completion_tokens
                )
            put(result)

        future = self._scheduler.submit(job)
        self._stop_flags.add(cancelled)
        try:
            while True:
                item = await events.get()
                if isinstance(item, _Failed):
                    raise item.error
                yield item
                if isinstance(item, GenerationResult):
                    return
        finally:
            # Reached on completion, on error, and when the caller is cancelled or closes us:
            # the token loop sees the flag before its next token.
            cancelled.set()
            future.cancel()
            self._stop_flags.discard(cancelled)

    def abort(self) -> None:
        self._aborted = True
        for flag in list(self._stop_flags):
            flag.set()

    @staticmethod
    async def _run(scheduler: SerialScheduler, fn: Callable[[], Any]) -> Any:
        # The job keeps its slot until it really ends, even if this await is cancelled.
        return await asyncio.wrap_future(scheduler.submit(fn))

    async def embed(self, inputs: Sequence[Sequence[int]], normalize: bool) -> list[list[float]]:
        limit = self._model.embed_context_size
        for i, tokens in enumerate(inputs):
            if not tokens:
                raise InvalidRequest(f"input {i} is empty", param="inputs")
            if len(tokens) > limit:
                raise InvalidRequest(
                    f"input {i} has {len(tokens)} tokens; embeddings take at most {limit}",
                    param="inputs",
                )

        cancelled = threading.Event()

        def job() -> list[list[float]]:
            vectors = []
            for tokens in inputs:
                if cancelled.is_set():  # the caller is gone: free the model between inputs
                    return []
                vectors.append(self._model.embed(tokens))
            return [_unit(v) for v in vectors] if normalize else vectors

        try:
            result: list[list[float]] = await self._run(self._scheduler, job)
        finally:
            cancelled.set()
        return result

    async def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        # The vocabulary is read-only: tokenizing beside a running generation is safe.
        result: list[int] = await self._run(
            self._tokenizer, lambda: self._model.tokenize(text, add_special, parse_special)
        )
        return result

    async def detokenize(self, token_ids: Sequence[int]) -> str:
        result: str = await self._run(self._tokenizer, lambda: self._model.detokenize(token_ids))
        return result

    async def close(self) -> None:
        """Waits for running jobs (tokenizer ones too) before freeing, all off the event loop."""
        await asyncio.to_thread(self._scheduler.shutdown)
        await asyncio.to_thread(self._tokenizer.shutdown)
        await asyncio.to_thread(self._model.close)


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector
