"""The llama.cpp engine: a LlamaModel driven from asyncio through a SerialScheduler."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.engine.llama_backend import LlamaModel, LoadOptions
from core.engine.scheduler import SerialScheduler
from core.engine.token_loop import run_generation
from core.engine.types import FinishReason, GenerationEvent, GenerationRequest, GenerationResult
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
        # The most recent generation's outcome, for logs, metrics and tests.
        self.last_result: GenerationResult | None = None

    @classmethod
    def load(
        cls,
        name: str,
        opts: LoadOptions,
        queue_size: int,
        progress: Callable[[float], None] | None = None,
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
        return self._scheduler.admitted > 0

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[GenerationEvent | _Failed] = asyncio.Queue()
        cancelled = threading.Event()

        def put(item: GenerationEvent | _Failed) -> None:
            loop.call_soon_threadsafe(events.put_nowait, item)

        def job() -> None:
            if cancelled.is_set():
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

    async def _run(self, fn: Callable[[], Any]) -> Any:
        future = self._scheduler.submit(fn)
        return await asyncio.wrap_future(future)

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

        def job() -> list[list[float]]:
            vectors = [self._model.embed(tokens) for tokens in inputs]
            return [_unit(v) for v in vectors] if normalize else vectors

        result: list[list[float]] = await self._run(job)
        return result

    async def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        # The vocabulary is read-only: tokenizing beside a running generation is safe.
        return await asyncio.to_thread(self._model.tokenize, text, add_special, parse_special)

    async def detokenize(self, token_ids: Sequence[int]) -> str:
        return await asyncio.to_thread(self._model.detokenize, token_ids)

    async def close(self) -> None:
        await asyncio.to_thread(self._scheduler.shutdown)
        self._model.close()


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector
