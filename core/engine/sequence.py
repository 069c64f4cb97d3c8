"""Per-request and per-choice state of a generation: sampler, stop matcher, UTF-8 decoder, timings."""

from __future__ import annotations

import codecs
import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import llama_cpp
import numpy as np
import numpy.typing as npt

from core.engine.constrained import LazyGrammar
from core.engine.logprobs import SampledLogprob, sampled_logprob
from core.engine.slots import Slot
from core.engine.stop import StopMatcher
from core.engine.types import (
    ChoiceEnd,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    GenerationResult,
    Timings,
    TokenChunk,
)
from core.engine.vocab import Vocab

log = logging.getLogger(__name__)

# Thread-safe callbacks into the request's asyncio stream.
Emit = Callable[[GenerationEvent], None]
Fail = Callable[[BaseException], None]


class JobState(enum.Enum):
    WAITING = "waiting"
    PREFILL = "prefill"
    DECODING = "decoding"
    DONE = "done"


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


@dataclass
class Clock:
    """Marks of one request's life, turned into Timings at the end."""

    arrived: float
    started: float = 0.0
    prompt_done: float = 0.0
    first_token: float = 0.0

    def timings(self, evaluated: int, generated: int, choices: int = 1) -> Timings:
        end = time.perf_counter()
        started = self.started or end
        prompt_s = (self.prompt_done or started) - started
        decode_s = end - self.first_token if self.first_token else 0.0
        # Each choice's first token comes from the prompt's logits, not from a decode step.
        after_first = max(generated - choices, 0)
        return Timings(
            queue_ms=_ms(started - self.arrived),
            time_to_first_token_ms=_ms(self.first_token - self.arrived) if self.first_token else 0.0,
            prompt_ms=_ms(prompt_s),
            decode_ms=_ms(decode_s),
            decode_tokens_per_second=round(after_first / decode_s, 2)
            if decode_s > 0 and after_first
            else 0.0,
            prompt_tokens_per_second=round(evaluated / prompt_s, 2) if prompt_s > 0 else 0.0,
            total_ms=_ms(end - self.arrived),
        )


class Choice:
    """One completion being generated in one slot.

    Constrained and inspected sampling: a `grammar` checks what the chain picks, and score()
    reads the raw logits of a sampled position when logprobs were asked for.
    """

    def __init__(
        self,
        index: int,
        slot: Slot,
        chain: llama_cpp.llama_sampler_p,
        job: Job,
        grammar: llama_cpp.llama_sampler_p | None = None,
        argmax: bool = False,
    ) -> None:
        self.index = index
        self.slot = slot
        self.chain: llama_cpp.llama_sampler_p | None = chain
        # The chain is greedy alone: picking the argmax of the logits is the same, and cheaper.
        self.argmax = argmax
        # Checked after the chain picks a token (see core.engine.constrained).
        self.grammar = grammar
        # A grammar waiting for its trigger: it becomes `grammar` once the trigger appears.
        self.lazy: LazyGrammar | None = None
        self.job = job
        self.generated = 0
        self.pending: int | None = None  # sampled, not yet decoded into the KV cache
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._stops = StopMatcher(job.request.sampling.stop)
        self.end: ChoiceEnd | None = None

    @property
    def wants_logprobs(self) -> bool:
        return self.job.request.sampling.logprobs

    def score(self, logits: npt.NDArray[np.float32], token: int, vocab: Vocab) -> SampledLogprob:
        """The sampled token's log-probability and its rivals, with their pieces."""
        found = sampled_logprob(logits, token, self.job.request.sampling.top_logprobs)
        return SampledLogprob(
            replace(found.token, piece=vocab.piece(token)),
            tuple(replace(t, piece=vocab.piece(t.token)) for t in found.top),
        )

    def accept(self, token: int, vocab: Vocab, logprob: SampledLogprob | None = None) -> None:
        """Take a sampled token: end on EOG, a stop string or max_tokens, else emit its text."""
        if vocab.is_eog(token):
            self.finish(FinishReason.STOP)
            return
        self.generated += 1
        piece = vocab.piece(token, special=token in self.job.request.preserved)
        result = self._stops.feed(self._decoder.decode(piece))
        scored = (logprob,) if logprob is not None else ()
        self.job.send(TokenChunk(result.emit, (token,), self.index, scored))
        if result.matched is not None:
            self.finish(FinishReason.STOP, result.matched)
        elif self.generated >= self.job.request.max_tokens or self._out_of_time():
            self.finish(FinishReason.LENGTH)
        else:
            self.pending = token

    def _out_of_time(self) -> bool:
        limit = self.job.request.time_limit_s
        return limit is not None and time.perf_counter() - self.job.clock.started >= limit

    def finish(self, reason: FinishReason, matched: str = "") -> None:
        if self.end is not None:
            return
        if reason is not FinishReason.CANCELLED and not matched:
            tail = self._stops.feed(self._decoder.decode(b"", final=True)).emit + self._stops.flush()
            if tail:
                self.job.send(TokenChunk(tail, (), self.index))
        self.pending = None
        self.end = ChoiceEnd(self.index, reason, self.generated, matched)
        self.free_chain()

    def free_chain(self) -> None:
        if self.chain is not None:
            llama_cpp.llama_sampler_free(self.chain)
            self.chain = None
        if self.grammar is not None:
            llama_cpp.llama_sampler_free(self.grammar)
            self.grammar = None
        if self.lazy is not None:
            llama_cpp.llama_sampler_free(self.lazy.grammar)
            self.lazy = None


@dataclass(eq=False)
class Job:
    """One request: its prompt is evaluated once in `slots[0]`, then forked into n choices."""

    request: GenerationRequest
    emit: Emit
    fail: Fail
    cancelled: threading.Event = field(default_factory=threading.Event)
    state: JobState = JobState.WAITING
    slots: list[Slot] = field(default_factory=list)
    choices: list[Choice] = field(default_factory=list)
    cached: int = 0  # prompt tokens reused from the KV cache
    n_past: int = 0  # prompt tokens in the primary slot's KV so far
    requeued: bool = False  # sent back to the queue for want of KV room
    grammar: str = ""  # the GBNF every choice's sampler chain starts with ("" for none)
    starved_steps: int = 0  # steps in prefill that got no prompt tokens
    clock: Clock = field(init=False)

    def __post_init__(self) -> None:
        self.clock = Clock(self.request.arrived)

    @property
    def prompt(self) -> tuple[int, ...]:
        return self.request.prompt

    def send(self, event: GenerationEvent) -> None:
        """Hand an event to the request's stream; a broken stream cancels this job only."""
        try:
            self.emit(event)
        except Exception:
            log.exception("a generation stream failed to take an event; dropping its request")
            self.cancelled.set()

    def send_error(self, error: BaseException) -> None:
        try:
            self.fail(error)
        except Exception:
            log.exception("a generation stream failed to take its error")
            self.cancelled.set()

    @property
    def live(self) -> list[Choice]:
        return [c for c in self.choices if c.end is None]

    def result(self) -> GenerationResult:
        ends = tuple(
            c.end or ChoiceEnd(c.index, FinishReason.CANCELLED, c.generated) for c in self.choices
        ) or tuple(  # ended before its prompt was read: every choice was cancelled
            ChoiceEnd(i, FinishReason.CANCELLED, 0) for i in range(self.request.n)
        )
        generated = sum(e.completion_tokens for e in ends)
        timings = self.clock.timings(self.n_past - self.cached, generated, len(ends))
        return GenerationResult.of_choices(ends, len(self.prompt), self.cached, timings)
