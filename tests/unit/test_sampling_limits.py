"""The bridge (OpenAI and Ollama dialects) and the core accept exactly the same sampling numbers:
one table, minerva.v1.limits, read by all three, checked here at every edge."""

from __future__ import annotations

import math
from typing import Any

import pytest
from minerva.v1 import inference_pb2
from minerva.v1.limits import MAX_TOP_K, MIN_TOP_K, SAMPLING_RANGES, Range, float32

from core.errors import InvalidRequest
from core.services.sampling import sampling_from_pb
from rest_bridge.errors import BadRequest
from rest_bridge.ollama import requests as ollama
from rest_bridge.protocol import chat_request

HUGE = 10**400  # a JSON integer no float holds


def openai_accepts(field: str, value: Any) -> bool:
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], field: value}
    try:
        chat_request(body)
    except BadRequest as error:
        assert error.param == field
        return False
    return True


def ollama_accepts(field: str, value: Any) -> bool:
    try:
        ollama.sampling({"options": {field: value}})
    except BadRequest as error:
        assert error.param == f"options.{field}"
        return False
    return True


def core_accepts(field: str, value: Any) -> bool:
    """What the core answers for SamplingParams carrying `value` (False when no proto can)."""
    try:
        params = inference_pb2.SamplingParams(**{field: value})
    except (TypeError, ValueError, OverflowError):
        return False
    try:
        sampling_from_pb(params)
    except InvalidRequest as error:
        assert error.param == f"sampling.{field}"
        return False
    return True


def edges(bounds: Range) -> list[float]:
    """Both ends, just inside and outside them (also closer than a float32 tells apart), the
    middle, and what is no number in range at all."""
    low, high = bounds.low, bounds.high
    return [
        *(low - 0.01, low - 1e-9, low, low + 1e-46, low + 1e-9, low + 0.01),
        (low + high) / 2,
        *(high - 0.01, high - 1e-9, high, high + 1e-9, high + 0.01),
        *(math.nan, math.inf, -math.inf, 1e39, -1e39, HUGE, -HUGE),
    ]


FLOAT_ROWS = [
    pytest.param(field, value, id=f"{field}={value!r:.12}")
    for field, bounds in SAMPLING_RANGES.items()
    for value in edges(bounds)
]


@pytest.mark.parametrize(("field", "value"), FLOAT_ROWS)
def test_bridge_and_core_agree_on_every_float_edge(field: str, value: float) -> None:
    core = core_accepts(field, value)
    assert openai_accepts(field, value) == core
    assert ollama_accepts(field, value) == core


@pytest.mark.parametrize("field", list(SAMPLING_RANGES))
def test_the_ends_are_where_the_contract_puts_them(field: str) -> None:
    bounds = SAMPLING_RANGES[field]
    expected = {
        bounds.low: not bounds.low_open,
        bounds.high: True,
        bounds.low - 0.01: False,
        bounds.high + 0.01: False,
        (bounds.low + bounds.high) / 2: True,
    }
    for value, accepted in expected.items():
        for side in (core_accepts, openai_accepts, ollama_accepts):
            assert side(field, value) == accepted, (side.__name__, value)


def test_repeat_penalty_zero_is_refused_everywhere() -> None:
    # The OpenAI route once took any repeat_penalty >= 0 while the core refused 0.
    for side in (core_accepts, openai_accepts, ollama_accepts):
        assert not side("repeat_penalty", 0), side.__name__
        # 1e-46 is 0 once in a float32 field: refused before it reaches the core.
        assert not side("repeat_penalty", 1e-46), side.__name__
        assert side("repeat_penalty", 1e-9), side.__name__


@pytest.mark.parametrize(
    "value", [MIN_TOP_K - 1, MIN_TOP_K, MIN_TOP_K + 1, MAX_TOP_K, MAX_TOP_K + 1, HUGE]
)
def test_bridge_and_core_agree_on_top_k(value: int) -> None:
    core = core_accepts("top_k", value)
    assert core == (MIN_TOP_K <= value <= MAX_TOP_K)
    assert openai_accepts("top_k", value) == core
    assert ollama_accepts("top_k", value) == core


@pytest.mark.parametrize(
    ("value", "carried"),
    [
        (0.7, 0.699999988079071),
        (2.000000001, 2.0),
        (1e-46, 0.0),
        (1e39, math.inf),
        (HUGE, math.inf),
    ],
)
def test_float32_is_what_a_proto_float_field_carries(value: float, carried: float) -> None:
    assert float32(value) == carried
    if abs(value) < 1e39:
        assert inference_pb2.SamplingParams(temperature=value).temperature == carried


def test_every_sampling_float_of_the_contract_has_a_range() -> None:
    floats = {
        field.name
        for field in inference_pb2.SamplingParams.DESCRIPTOR.fields
        if field.type == field.TYPE_FLOAT
    }
    assert floats == set(SAMPLING_RANGES)
    assert set(ollama.NUMBER_OPTIONS) == set(SAMPLING_RANGES)
