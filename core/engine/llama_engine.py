"""The llama.cpp engine: a StepLoop for generation, an Embedder and a Tokenizer, each on its own
thread, driven from asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass

from core.engine import grammar
from core.engine.embedder import Embedder
from core.engine.llama_backend import LlamaModel, LoadOptions, ProgressSink
from core.engine.scheduler import SerialScheduler
from core.engine.sequence import Job
from core.engine.step_loop import StepLoop
from core.engine.tokenizer import Tokenizer
from core.engine.types import (
    EngineStats,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    GenerationResult,
    LoadProgress,
    LoadStage,
)
from core.errors import InvalidRequest, Overloaded

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


class LlamaEngine:
    """Implements core.engine.base.Engine for GGUF models."""

    def __init__(self, model: LlamaModel, name: str, queue_size: int) -> None:
        self._model = model
        self._name = name
        self._opts = model.opts
        self._steps = StepLoop(name, model, model.opts, queue_size)
        self._embedder = Embedder(model, model.opts.context_size)
        self._threads = model.opts.threads
        self._embed_jobs = SerialScheduler(f"{name}-embed", queue_size)
        # Every admitted generation may need the tokenizer at once.
        self._tokenizer_jobs = SerialScheduler(f"{name}-tokenizer", queue_size + model.opts.slots)
        self._tokenizer = Tokenizer(model.vocab, self._tokenizer_jobs)
        # The most recent generation's outcome, for logs and tests.
        self.last_result: GenerationResult | None = None
        self._jobs: set[Job] = set()
        self._compiling = 0  # grammar compiles running in worker threads
        self._reserved = 0  # generation requests holding a place (reserve)
        self._aborted = False  # set for good at shutdown: later generations end at once

    @classmethod
    def load(
        cls, name: str, opts: LoadOptions, queue_size: int, progress: ProgressSink | None = None
    ) -> LlamaEngine:
        """Blocking: load weights and create the contexts. Run it off the event loop."""
        model = LlamaModel(opts, progress)
        try:
            if progress is not None:
                progress(LoadProgress(LoadStage.CREATING_CONTEXT, 1.0, "allocating the KV cache"))
            return cls(model, name, queue_size)
        except BaseException:
            model.close()  # a failed context must not leak the weights
            raise

    @property
    def sequence_capacity(self) -> int:
        return self._opts.context_size

    @property
    def embed_capacity(self) -> int:
        return self._embedder.max_tokens

    @property
    def kv_capacity(self) -> int:
        return self._steps.kv_cells

    @property
    def slots(self) -> int:
        return self._steps.slots

    @property
    def threads(self) -> int:
        return self._threads

    def set_threads(self, n: int) -> None:
        # The configured count is the operator's cap: clients may only ask for fewer.
        self._threads = max(1, min(n, self._opts.threads))
        self._steps.set_threads(self._threads)
        self._embedder.threads = self._threads

    @contextlib.contextmanager
    def reserve(self) -> Iterator[None]:
        if self._reserved >= self._steps.capacity:
            raise Overloaded(
                f"model {self._name!r} is busy: {self._reserved} requests in flight; retry later"
            )
        self._reserved += 1
        try:
            yield
        finally:
            self._reserved -= 1

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    @property
    def memory_bytes(self) -> int:
        return self._model.size_bytes

    @property
    def busy(self) -> bool:
        return (
            self._steps.busy
            or self._compiling > 0
            or self._embed_jobs.admitted > 0
            or self._tokenizer_jobs.admitted > 0
        )

    def stats(self) -> EngineStats:
        return self._steps.stats()

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[GenerationEvent | _Failed] = asyncio.Queue()

        def put(item: GenerationEvent | _Failed) -> None:  # called on the step thread
            if isinstance(item, GenerationResult):
                self._finished(item)
            try:
                loop.call_soon_threadsafe(events.put_nowait, item)
            except RuntimeError:  # the event loop is closed: nobody listens any more
                job.cancelled.set()

        job = Job(request, emit=put, fail=lambda exc: put(_Failed(exc)))
        sampling = request.sampling
        if sampling.grammar or sampling.json_schema:
            self._compiling += 1  # the model must not be freed under a compile
            try:
                job.grammar = await asyncio.to_thread(
                    grammar.resolve,
                    sampling.grammar,
                    sampling.json_schema,
                    self._model.vocab,
                    sampling.grammar_param,
                )
            finally:
                self._compiling -= 1
        if self._aborted:
            job.cancelled.set()
        self._steps.submit(job)
        self._jobs.add(job)
        try:
            while True:
                item = await events.get()
                if isinstance(item, _Failed):
                    raise item.error
                yield item
                if isinstance(item, GenerationResult):
                    return
        finally:
            # On completion, error, or the caller going away: the step loop drops the job
            # before its next step.
            job.cancelled.set()
            self._jobs.discard(job)

    def _finished(self, result: GenerationResult) -> None:
        self.last_result = result
        if result.finish_reason is FinishReason.CANCELLED:
            log.info(
                "generation cancelled: model=%s tokens=%d", self._name, result.completion_tokens
            )

    def abort(self) -> None:
        self._aborted = True
        for job in list(self._jobs):
            job.cancelled.set()
        self._steps.wake()

    async def embed(self, inputs: Sequence[Sequence[int]], normalize: bool) -> list[list[float]]:
        limit = self._embedder.max_tokens
        for i, tokens in enumerate(inputs):
            if not tokens:
                raise InvalidRequest(f"input {i} is empty", param="inputs")
            if len(tokens) > limit:
                raise InvalidRequest(
                    f"input {i} has {len(tokens)} tokens; embeddings take at most {limit}",
                    param="inputs",
                )
        cancelled = threading.Event()
        future = self._embed_jobs.submit(lambda: self._embedder.embed_all(inputs, cancelled))
        try:
            vectors = await asyncio.wrap_future(future)
        finally:
            cancelled.set()  # the caller is gone: stop between inputs
        return [_unit(v) for v in vectors] if normalize else vectors

    async def close(self) -> None:
        """Waits for running work (tokenizer and embeddings too), then frees, off the event loop."""
        await asyncio.to_thread(self._steps.close)
        await asyncio.to_thread(self._embed_jobs.shutdown)
        await asyncio.to_thread(self._tokenizer_jobs.shutdown)
        await asyncio.to_thread(self._embedder.close)
        await asyncio.to_thread(self._model.close)


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector
