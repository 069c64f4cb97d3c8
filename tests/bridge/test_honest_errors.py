"""Honest errors: refused OpenAI fields, too-deep bodies and int64 seeds, as tables and over HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from rest_bridge import protocol
from rest_bridge.body import MAX_NESTING, nesting_depth, parse_body
from rest_bridge.errors import BadRequest
from rest_bridge.seed import INT64_MAX, INT64_MIN, RANDOM_SEED, core_seed, splitmix64
from rest_bridge.unsupported import HARMLESS_FIELDS, REFUSED_FIELDS
from tests.bridge.conftest import MODEL_ID, FakeCore

TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
CHAT = {"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": MODEL_ID, "prompt": "Once"}
BUILDERS = [(protocol.chat_request, CHAT), (protocol.completion_request, COMPLETION)]

# Tools are read by chat only: the legacy completions endpoint refuses them.
TOOL_FIELDS = [
    ("tools", [TOOL]),
    ("tool_choice", "auto"),
    ("tool_choice", "required"),
    ("tool_choice", {"type": "function", "function": {"name": "f"}}),
    ("parallel_tool_calls", False),
]
REFUSED = [
    ("functions", [{"name": "f"}]),
    ("function_call", "auto"),
    ("reasoning_effort", "high"),
    ("reasoning_effort", "minimal"),
    ("verbosity", "low"),
    ("modalities", ["text", "audio"]),
    ("modalities", ["audio"]),
    ("audio", {"voice": "alloy", "format": "wav"}),
    ("prediction", {"type": "content", "content": "x"}),
    ("web_search_options", {}),
]


@pytest.mark.parametrize(("build", "base"), BUILDERS)
@pytest.mark.parametrize(("field", "value"), REFUSED)
def test_fields_that_change_the_answer_are_refused(
    build: Any, base: dict[str, Any], field: str, value: Any
) -> None:
    with pytest.raises(BadRequest) as caught:
        build({**base, field: value})
    assert (caught.value.status, caught.value.param) == (400, field)
    assert caught.value.code == "unsupported_parameter"
    assert caught.value.message.startswith(f"'{field}' is not supported: ")


@pytest.mark.parametrize(("field", "value"), TOOL_FIELDS)
def test_completions_refuse_tool_fields_and_chat_reads_them(field: str, value: Any) -> None:
    with pytest.raises(BadRequest, match="use /v1/chat/completions") as caught:
        protocol.completion_request({**COMPLETION, field: value})
    assert (caught.value.param, caught.value.code) == (field, "unsupported_parameter")
    request, _ = protocol.chat_request({**CHAT, "tools": [TOOL], field: value})
    assert [t.name for t in request.tools] == ["f"]


@pytest.mark.parametrize(("field", "value"), [("functions", [TOOL]), ("function_call", "auto")])
def test_legacy_function_fields_point_to_tools(field: str, value: Any) -> None:
    with pytest.raises(BadRequest, match="send tools and tool_choice"):
        protocol.chat_request({**CHAT, field: value})


ACCEPTED = [
    ("tools", []),
    ("tool_choice", "none"),
    ("functions", []),
    ("function_call", "none"),
    ("modalities", ["text"]),
    ("reasoning_effort", None),
    ("service_tier", "auto"),
    ("service_tier", "flex"),
    ("user", "u1"),
    ("store", True),
    ("metadata", {"a": "b"}),
    ("prompt_cache_key", "k"),
    # llama.cpp's fields that Minerva honours.
    ("top_k", 40),
    ("min_p", 0.05),
    ("repeat_penalty", 1.1),
    ("grammar", 'root ::= "yes"'),
]


@pytest.mark.parametrize(("build", "base"), BUILDERS)
@pytest.mark.parametrize(("field", "value"), ACCEPTED)
def test_fields_that_change_nothing_or_are_honoured_are_accepted(
    build: Any, base: dict[str, Any], field: str, value: Any
) -> None:
    request, _ = build({**base, field: value})
    assert request.model_id == MODEL_ID


def test_no_field_is_both_refused_and_harmless() -> None:
    assert not HARMLESS_FIELDS & REFUSED_FIELDS.keys()
    assert all(refusal.reason for refusal in REFUSED_FIELDS.values())


def nested(depth: int) -> bytes:
    return b'{"a": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b'{"a": 1}', 1),
        (b'{"a": [1, {"b": []}], "c": {}}', 4),
        (nested(MAX_NESTING), MAX_NESTING),
        (b'{"a": "[[[{{{", "b": "\\"[[["}', 1),
        (b'{"a": "\\\\", "b": [[]]}', 3),
        (b"[" * 10_000, 10_000),
        (b"", 0),
    ],
)
def test_nesting_depth_skips_strings(raw: bytes, depth: int) -> None:
    assert nesting_depth(raw) == depth


def test_a_body_at_the_limit_parses() -> None:
    assert "a" in parse_body(nested(MAX_NESTING))
    assert parse_body(b'{"a": "' + b"[" * 10_000 + b'"}')["a"] == "[" * 10_000


@pytest.mark.parametrize(
    "raw",
    [nested(MAX_NESTING + 1), b"[" * 10_000 + b"]" * 10_000, b'{"a": ' + b'{"b": ' * 5_000],
)
def test_too_deep_bodies_are_400_without_recursing(raw: bytes) -> None:
    with pytest.raises(BadRequest, match="nested too deeply") as caught:
        parse_body(raw)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("seed", "sent"), [(0, 0), (7, 7), (42, 42), (RANDOM_SEED - 1, RANDOM_SEED - 1)]
)
def test_seeds_in_llama_cpp_range_pass_unchanged(seed: int, sent: int) -> None:
    assert core_seed(seed) == sent
    request, _ = protocol.chat_request({**CHAT, "seed": seed})
    assert request.sampling.seed == sent


BOUNDARY_SEEDS = [
    *range(-3, 3),
    *range(RANDOM_SEED - 2, RANDOM_SEED + 4),
    *range(INT64_MAX - 2, INT64_MAX + 1),
    *range(INT64_MIN, INT64_MIN + 3),
]


def test_seeds_around_the_boundaries_map_to_distinct_non_random_seeds() -> None:
    mapped = [core_seed(seed) for seed in BOUNDARY_SEEDS]
    assert len(set(mapped)) == len(BOUNDARY_SEEDS)
    assert all(0 <= seed < RANDOM_SEED for seed in mapped)
    assert core_seed(2**32) != 0
    assert core_seed(-1) not in (RANDOM_SEED, RANDOM_SEED - 1, core_seed(RANDOM_SEED))


def test_splitmix64_matches_the_reference() -> None:
    # The first output of Vigna's splitmix64.c seeded with 0.
    assert splitmix64(0) == 0xE220A8397B1DCDAF


@pytest.mark.parametrize("seed", [INT64_MAX + 1, INT64_MIN - 1, 2**70, -(2**70)])
def test_seeds_outside_int64_are_400(seed: int) -> None:
    with pytest.raises(BadRequest) as caught:
        protocol.chat_request({**CHAT, "seed": seed})
    assert caught.value.param == "seed"


@pytest.mark.parametrize(
    ("url", "body", "param"),
    [
        ("/v1/chat/completions", {**CHAT, "reasoning_effort": "high"}, "reasoning_effort"),
        ("/v1/completions", {**COMPLETION, "tools": [TOOL]}, "tools"),
    ],
)
async def test_refused_fields_never_reach_the_core(
    bridge: TestClient, core: FakeCore, url: str, body: dict[str, Any], param: str
) -> None:
    response = await bridge.post(url, json=body)
    assert response.status == 400
    error = (await response.json())["error"]
    assert (error["param"], error["code"]) == (param, "unsupported_parameter")
    assert core.inference.requests == []


async def test_too_deep_body_is_400_envelope(bridge: TestClient, core: FakeCore) -> None:
    raw = b"[" * 10_000 + b"]" * 10_000
    response = await bridge.post("/v1/chat/completions", data=raw)
    assert response.status == 400
    error = (await response.json())["error"]
    assert "nested too deeply" in error["message"]
    assert error["type"] == "invalid_request_error"
    assert core.inference.requests == []


def test_a_lone_surrogate_is_a_400_and_a_pair_is_text() -> None:
    assert parse_body(b'{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}
    with pytest.raises(BadRequest, match="lone surrogate"):
        parse_body(b'{"tools": [{"function": {"name": "\\ud800"}}]}')
