"""Frozen domain types passed between the inference layer and engines."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from core.engine.logprobs import SampledLogprob
from core.engine.sampling import Sampling


class FlashAttention(enum.Enum):
    """Whether attention runs on llama.cpp's flash-attention kernels."""

    # llama.cpp decides when layers are offloaded to a GPU; on the CPU it stays off: there its
    # kernel makes each generated token slower as the sequence grows (README: Flash attention).
    AUTO = "auto"
    ON = "on"
    OFF = "off"


class LoadStage(enum.Enum):
    """Where a model load is: the steps LoadModel reports, in order."""

    QUEUED = "queued"  # waiting for memory
    CONVERTING = "converting"  # a SafeTensors checkpoint becoming GGUF
    LOADING_WEIGHTS = "loading_weights"
    CREATING_CONTEXT = "creating_context"
    READY = "ready"


class FinishReason(enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"
    # Set by the chat layer, never by an engine: the answer called tools.
    TOOL_CALLS = "tool_calls"


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A validated request: prompt already tokenized, max_tokens already resolved."""

    prompt: tuple[int, ...]
    sampling: Sampling
    max_tokens: int
    # time.perf_counter() when the request arrived, for queue and first-token timings.
    arrived: float
    # Completions from the one prompt (choices 0..n-1).
    n: int = 1
    # The client's conversation name: the engine prefers the slot that served it last.
    session: str = ""
    # Control tokens whose text goes out with the answer (tool-call markers such as Mistral's
    # [TOOL_CALLS]); every other control token is shown as nothing.
    preserved: frozenset[int] = frozenset()
    # Seconds it may generate, counted from the start of its prefill; then it ends with LENGTH.
    time_limit_s: float | None = None


@dataclass(frozen=True, slots=True)
class TokenChunk:
    text: str
    token_ids: tuple[int, ...]
    # The choice this text belongs to.
    index: int = 0
    # With sampling.logprobs: one per token id.
    logprobs: tuple[SampledLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class Timings:
    queue_ms: float = 0.0
    time_to_first_token_ms: float = 0.0
    prompt_ms: float = 0.0
    decode_ms: float = 0.0
    decode_tokens_per_second: float = 0.0
    prompt_tokens_per_second: float = 0.0
    total_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class ChoiceEnd:
    """How one choice of a generation ended."""

    index: int
    finish_reason: FinishReason
    completion_tokens: int
    matched_stop: str = ""


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """The last event of every generation; the top-level finish fields are choice 0's."""

    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int  # summed over choices
    cached_tokens: int
    timings: Timings
    matched_stop: str = ""
    choices: tuple[ChoiceEnd, ...] = ()

    @classmethod
    def of_choices(
        cls, choices: tuple[ChoiceEnd, ...], prompt_tokens: int, cached: int, timings: Timings
    ) -> GenerationResult:
        first = choices[0]
        return cls(
            finish_reason=first.finish_reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=sum(c.completion_tokens for c in choices),
            cached_tokens=cached,
            timings=timings,
            matched_stop=first.matched_stop,
            choices=choices,
        )


@dataclass(frozen=True, slots=True)
class EngineStats:
    """Counters of one loaded model, for metrics: gauges now, totals since load."""

    queue_depth: int = 0
    active_sequences: int = 0
    slots: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0
    prefix_cache_hit_tokens: int = 0


GenerationEvent = TokenChunk | GenerationResult


@dataclass(frozen=True, slots=True)
class LoadProgress:
    """One step of a model load, as reported to LoadModel callers."""

    stage: LoadStage
    progress: float = 0.0
    message: str = ""
