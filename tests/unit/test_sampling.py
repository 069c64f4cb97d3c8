"""SamplingParams -> Sampling: documented defaults, bounds per field, token ids, max_tokens rule."""

from __future__ import annotations

import math
from typing import Any

import pytest
from minerva.v1 import inference_pb2

from core.engine.samplers import plain_greedy
from core.engine.sampling import Sampling, check_token_ids, resolve_max_tokens
from core.errors import InvalidRequest
from core.services.sampling import sampling_from_pb

NAN = math.nan
INF = math.inf


def params(**fields: Any) -> inference_pb2.SamplingParams:
    return inference_pb2.SamplingParams(**fields)


@pytest.mark.parametrize("p", [None, params()], ids=["none", "empty"])
def test_defaults_when_unset(p: inference_pb2.SamplingParams | None) -> None:
    s = sampling_from_pb(p)
    assert s == Sampling(
        temperature=0.8,
        top_p=0.95,
        top_k=40,
        min_p=0.05,
        repeat_penalty=1.0,
        presence_penalty=0.0,
        frequency_penalty=0.0,
        seed=None,
        stop=(),
        max_tokens=None,
        logit_bias={},
    )
    assert not s.greedy


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 0.0),
        ("top_p", 0.0),
        ("top_k", 0),
        ("min_p", 0.0),
        ("seed", 0),
    ],
)
def test_explicit_zero_is_not_the_default(field: str, value: float) -> None:
    s = sampling_from_pb(params(**{field: value}))
    assert getattr(s, field) == value
    assert getattr(Sampling(), field) != value


def test_zero_temperature_is_greedy() -> None:
    s = sampling_from_pb(params(temperature=0.0))
    assert s.temperature == 0.0
    assert s.greedy


# (field, value, accepted): inside, both edges, and just outside each bound.
FIELD_ROWS = [
    ("temperature", 0.7, True),
    ("temperature", 0.0, True),
    ("temperature", 2.0, True),
    ("temperature", -0.01, False),
    ("temperature", 2.01, False),
    ("top_p", 0.5, True),
    ("top_p", 0.0, True),
    ("top_p", 1.0, True),
    ("top_p", -0.1, False),
    ("top_p", 1.01, False),
    ("top_k", 1, True),
    ("top_k", 0, True),
    ("top_k", 100000, True),
    ("top_k", -1, False),
    ("min_p", 0.1, True),
    ("min_p", 0.0, True),
    ("min_p", 1.0, True),
    ("min_p", -0.01, False),
    ("min_p", 1.5, False),
    ("repeat_penalty", 1.1, True),
    ("repeat_penalty", 0.01, True),
    ("repeat_penalty", 10.0, True),
    ("repeat_penalty", 0.0, False),
    ("repeat_penalty", -1.0, False),
    ("repeat_penalty", 10.01, False),
    ("presence_penalty", 0.5, True),
    ("presence_penalty", -2.0, True),
    ("presence_penalty", 2.0, True),
    ("presence_penalty", -2.01, False),
    ("presence_penalty", 2.01, False),
    ("frequency_penalty", -0.5, True),
    ("frequency_penalty", -2.0, True),
    ("frequency_penalty", 2.0, True),
    ("frequency_penalty", -2.5, False),
    ("frequency_penalty", 3.0, False),
    ("seed", 0, True),
    ("seed", 2**32 - 2, True),
    ("max_tokens", 1, True),
    ("max_tokens", 2**32 - 1, True),
    ("max_tokens", 0, False),
]
FLOAT_FIELDS = [
    "temperature",
    "top_p",
    "min_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
]
FIELD_ROWS += [(f, bad, False) for f in FLOAT_FIELDS for bad in (NAN, INF, -INF)]


@pytest.mark.parametrize(("field", "value", "accepted"), FIELD_ROWS)
def test_field_bounds(field: str, value: float, accepted: bool) -> None:
    p = params(**{field: value})
    if accepted:
        assert getattr(sampling_from_pb(p), field) == value
        return
    with pytest.raises(InvalidRequest) as info:
        sampling_from_pb(p)
    assert info.value.param == f"sampling.{field}"
    assert f"sampling.{field}" in info.value.message


@pytest.mark.parametrize(
    ("sent", "used"),
    [(2**32 - 1, 2**32 - 2), (2**32 - 2, 2**32 - 2), (0, 0), (42, 42)],
)
def test_llama_random_seed_sentinel_is_not_passed_through(sent: int, used: int) -> None:
    # 0xFFFFFFFF would make llama.cpp pick a random seed, breaking reproducibility.
    assert sampling_from_pb(params(seed=sent)).seed == used


def test_float32_values_come_back_as_written() -> None:
    s = sampling_from_pb(params(temperature=0.7, top_p=0.9, min_p=0.1, logit_bias={5: 0.3}))
    assert (s.temperature, s.top_p, s.min_p) == (0.7, 0.9, 0.1)
    assert s.logit_bias == {5: 0.3}


def test_error_message_names_the_bound_and_value() -> None:
    with pytest.raises(InvalidRequest) as info:
        sampling_from_pb(params(repeat_penalty=0.0))
    assert info.value.message == "sampling.repeat_penalty must be a number in (0, 10], got 0.0"


STOP_ROWS = [
    (["\n"], True),
    (["x" * 256], True),
    ([f"s{i}" for i in range(16)], True),
    (["🛑" * 256], True),
    ([f"s{i}" for i in range(17)], False),
    ([""], False),
    (["ok", ""], False),
    (["x" * 257], False),
    (["ok", "🛑" * 257], False),
]


@pytest.mark.parametrize(("stops", "accepted"), STOP_ROWS)
def test_stop_bounds(stops: list[str], accepted: bool) -> None:
    p = params(stop=stops)
    if accepted:
        assert sampling_from_pb(p).stop == tuple(stops)
        return
    with pytest.raises(InvalidRequest) as info:
        sampling_from_pb(p)
    assert info.value.param == "sampling.stop"


LOGIT_BIAS_ROWS = [
    ({1: 5.0, 2: -5.0}, True),
    ({0: -100.0}, True),
    ({49151: 100.0}, True),
    ({7: 100.5}, False),
    ({7: -101.0}, False),
    ({7: NAN}, False),
    ({7: INF}, False),
    ({-1: 1.0}, False),
]


@pytest.mark.parametrize(("bias", "accepted"), LOGIT_BIAS_ROWS)
def test_logit_bias_bounds(bias: dict[int, float], accepted: bool) -> None:
    p = params(logit_bias=bias)
    if accepted:
        assert sampling_from_pb(p).logit_bias == bias
        return
    with pytest.raises(InvalidRequest) as info:
        sampling_from_pb(p)
    assert info.value.param == "sampling.logit_bias"


def test_all_fields_together() -> None:
    p = params(
        temperature=1.5,
        top_p=0.5,
        top_k=7,
        min_p=0.25,
        repeat_penalty=1.25,
        presence_penalty=-1.5,
        frequency_penalty=0.5,
        seed=42,
        stop=["a", "b"],
        max_tokens=9,
        logit_bias={3: -100.0},
    )
    assert sampling_from_pb(p) == Sampling(
        1.5, 0.5, 7, 0.25, 1.25, -1.5, 0.5, 42, ("a", "b"), 9, {3: -100.0}
    )


@pytest.mark.parametrize(
    ("ids", "vocab", "bad"),
    [
        ([0, 1, 49151], 49152, None),
        ([], 10, None),
        ([3, 49152, -1], 49152, 49152),
        ([3, -1, 49152], 49152, -1),
        ([10], 10, 10),
    ],
)
def test_check_token_ids(ids: list[int], vocab: int, bad: int | None) -> None:
    if bad is None:
        check_token_ids(ids, vocab, "sampling.logit_bias")
        return
    with pytest.raises(InvalidRequest) as info:
        check_token_ids(ids, vocab, "sampling.logit_bias")
    assert info.value.param == "sampling.logit_bias"
    assert info.value.message == f"token id {bad} is outside the vocabulary (0..{vocab - 1})"


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "context", "expected"),
    [
        (10, None, 8192, 8182),
        (8191, None, 8192, 1),
        (10, 100, 8192, 100),
        (10, 8182, 8192, 8182),
        (0, 8192, 8192, 8192),
        # Past the context: clamped to the room left (the stream then ends with "length").
        (10, 8183, 8192, 8182),
        (10, 32000, 8192, 8182),
        (8191, 32000, 8192, 1),
    ],
)
def test_resolve_max_tokens(
    prompt: int, max_tokens: int | None, context: int, expected: int
) -> None:
    assert resolve_max_tokens(prompt, max_tokens, context) == expected


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "context", "param", "message"),
    [
        (8192, None, 8192, "prompt", "prompt has 8192 tokens but the context holds 8192"),
        (9000, 5, 8192, "prompt", "prompt has 9000 tokens but the context holds 8192"),
        (5, 0, 8192, "sampling.max_tokens", "sampling.max_tokens must be >= 1, got 0"),
    ],
)
def test_resolve_max_tokens_rejects(
    prompt: int, max_tokens: int | None, context: int, param: str, message: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        resolve_max_tokens(prompt, max_tokens, context)
    assert (info.value.param, info.value.message) == (param, message)


def test_resolve_max_tokens_prompt_param_is_the_callers() -> None:
    with pytest.raises(InvalidRequest) as info:
        resolve_max_tokens(20, None, 16, prompt_param="messages")
    assert info.value.param == "messages"


def test_the_bridge_and_the_core_take_their_limits_from_the_contract() -> None:
    # One source of truth: both sides read minerva.v1.limits, none keeps its own copy.
    import inspect

    from minerva.v1 import limits

    from core.services import sampling as core_sampling
    from rest_bridge import protocol, structured

    for module in (core_sampling, protocol, structured):
        assert "minerva.v1.limits import" in inspect.getsource(module)
    assert protocol.MAX_STOPS == core_sampling.MAX_STOPS == limits.MAX_STOPS
    assert structured.MAX_CONSTRAINT_BYTES == limits.MAX_CONSTRAINT_BYTES


@pytest.mark.parametrize(
    ("changes", "plain"),
    [
        ({"temperature": 0.0}, True),
        ({"temperature": 0.0, "top_k": 5, "top_p": 0.5, "stop": ("x",)}, True),
        ({"temperature": 0.7}, False),
        ({"temperature": 0.0, "repeat_penalty": 1.1}, False),
        ({"temperature": 0.0, "presence_penalty": 0.5}, False),
        ({"temperature": 0.0, "frequency_penalty": -0.5}, False),
        ({"temperature": 0.0, "logit_bias": {5: 0.0}}, False),
    ],
)
def test_plain_greedy_is_the_greedy_stage_alone(changes: dict[str, Any], plain: bool) -> None:
    """Only then may the step loop take the argmax instead of running the chain."""
    assert plain_greedy(Sampling(**changes)) is plain
