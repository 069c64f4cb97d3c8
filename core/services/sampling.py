"""SamplingParams -> Sampling: validation of every field before any work, defaults for unset ones."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from minerva.v1 import inference_pb2
from minerva.v1.limits import (
    LOGIT_BIAS_LIMIT,
    MAX_CHOICES,
    MAX_STOP_CHARS,
    MAX_STOPS,
    MAX_TOP_K,
    MAX_TOP_LOGPROBS,
    MIN_TOP_K,
    SAMPLING_RANGES,
    Range,
)

from core.engine.grammar import check_constraint_size
from core.engine.sampling import RANDOM_SEED_SENTINEL, Sampling
from core.errors import InvalidRequest


def sampling_from_pb(p: inference_pb2.SamplingParams | None) -> Sampling:
    """Validate a request's SamplingParams and fill in defaults; InvalidRequest names the field."""
    if p is None:
        return Sampling()
    values: dict[str, Any] = {}
    for name, bounds in SAMPLING_RANGES.items():  # every optional float field
        if p.HasField(name):
            values[name] = _checked_float(name, getattr(p, name), bounds)
    if p.HasField("top_k"):
        values["top_k"] = _checked_top_k(p.top_k)
    if p.HasField("seed"):
        values["seed"] = _checked_seed(p.seed)
    if p.HasField("max_tokens"):
        values["max_tokens"] = _checked_max_tokens(p.max_tokens)
    if p.HasField("n"):
        values["n"] = _checked_n(p.n)
    constraint = p.WhichOneof("constraint")
    if constraint is not None:
        values[constraint] = getattr(p, constraint)
        check_constraint_size(values[constraint], f"sampling.{constraint}")
    values["logprobs"] = p.logprobs
    if p.HasField("top_logprobs"):
        values["top_logprobs"] = _checked_top_logprobs(p.top_logprobs, p.logprobs)
    values["stop"] = _checked_stops(p.stop)
    values["logit_bias"] = _checked_logit_bias(p.logit_bias)
    return Sampling(**values)


def _float32(value: float) -> float:
    # proto floats are float32: 0.7 arrives as 0.699999988...; keep the value the client wrote.
    return float(str(np.float32(value)))


def _checked_float(name: str, value: float, bounds: Range) -> float:
    if value not in bounds:
        raise InvalidRequest(
            f"sampling.{name} must be a number in {bounds}, got {value}",
            param=f"sampling.{name}",
        )
    return _float32(value)


def _checked_top_k(value: int) -> int:
    if not MIN_TOP_K <= value <= MAX_TOP_K:
        raise InvalidRequest(
            f"sampling.top_k must be >= {MIN_TOP_K} (0 disables), got {value}",
            param="sampling.top_k",
        )
    return value


def _checked_seed(value: int) -> int:
    # llama.cpp reads 0xFFFFFFFF (LLAMA_DEFAULT_SEED) as "pick a random seed", so a client that
    # sent it would lose reproducibility; use its neighbour.
    return RANDOM_SEED_SENTINEL - 1 if value == RANDOM_SEED_SENTINEL else value


def _checked_max_tokens(value: int) -> int:
    if value < 1:
        raise InvalidRequest(
            f"sampling.max_tokens must be >= 1, got {value}", param="sampling.max_tokens"
        )
    return value


def _checked_n(value: int) -> int:
    if not 1 <= value <= MAX_CHOICES:
        raise InvalidRequest(
            f"sampling.n must be 1..{MAX_CHOICES}, got {value}", param="sampling.n"
        )
    return value


def _checked_top_logprobs(value: int, logprobs: bool) -> int:
    if not 0 <= value <= MAX_TOP_LOGPROBS:
        raise InvalidRequest(
            f"sampling.top_logprobs must be 0..{MAX_TOP_LOGPROBS}, got {value}",
            param="sampling.top_logprobs",
        )
    if value and not logprobs:
        raise InvalidRequest(
            "sampling.top_logprobs needs sampling.logprobs = true", param="sampling.top_logprobs"
        )
    return value


def _checked_stops(stops: Iterable[str]) -> tuple[str, ...]:
    result = tuple(stops)
    if len(result) > MAX_STOPS:
        raise InvalidRequest(
            f"sampling.stop has {len(result)} strings; at most {MAX_STOPS} are allowed",
            param="sampling.stop",
        )
    for i, stop in enumerate(result):
        if not 1 <= len(stop) <= MAX_STOP_CHARS:
            raise InvalidRequest(
                f"sampling.stop[{i}] must be 1..{MAX_STOP_CHARS} characters, got {len(stop)}",
                param="sampling.stop",
            )
    return result


def _checked_logit_bias(bias: Mapping[int, float]) -> dict[int, float]:
    result: dict[int, float] = {}
    # Sorted so the error names the same entry whatever the map's wire order.
    for token_id, value in sorted(bias.items()):
        if token_id < 0:
            raise InvalidRequest(
                f"sampling.logit_bias key {token_id} is not a token id", param="sampling.logit_bias"
            )
        if not (math.isfinite(value) and -LOGIT_BIAS_LIMIT <= value <= LOGIT_BIAS_LIMIT):
            raise InvalidRequest(
                f"sampling.logit_bias[{token_id}] must be in [-100, 100], got {value}",
                param="sampling.logit_bias",
            )
        result[int(token_id)] = _float32(value)
    return result
