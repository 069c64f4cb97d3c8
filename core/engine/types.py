"""Frozen domain types passed between the inference layer and engines."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from core.engine.sampling import Sampling


class FinishReason(enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A validated request: prompt already tokenized, max_tokens already resolved."""

    prompt: tuple[int, ...]
    sampling: Sampling
    max_tokens: int
    # time.perf_counter() when the request arrived, for queue and first-token timings.
    arrived: float


@dataclass(frozen=True, slots=True)
class TokenChunk:
    text: str
    token_ids: tuple[int, ...]


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
class GenerationResult:
    """The last event of every generation."""

    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    timings: Timings
    matched_stop: str = ""


GenerationEvent = TokenChunk | GenerationResult


@dataclass(frozen=True, slots=True)
class LoadProgress:
    """One step of a model load, as reported to LoadModel callers."""

    stage: str  # "queued" | "loading_weights" | "creating_context" | "ready"
    progress: float = 0.0
    message: str = ""
