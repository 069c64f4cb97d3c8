"""Structured output: response_format and `grammar` -> sampling.json_schema / sampling.grammar."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient
from minerva.v1 import inference_pb2
from minerva.v1.limits import MAX_CONSTRAINT_BYTES

from rest_bridge import protocol
from rest_bridge.errors import BadRequest
from tests.bridge.conftest import MODEL_ID, FakeCore, rpc_error

CITY = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["name", "population"],
    "additionalProperties": False,
}
GRAMMAR = 'root ::= "yes" | "no"'
USER = {"role": "user", "content": "hi"}
Sampling = Callable[[dict[str, Any]], inference_pb2.SamplingParams]


def chat_sampling(fields: dict[str, Any]) -> inference_pb2.SamplingParams:
    return protocol.chat_request({"model": "m", "messages": [USER], **fields})[0].sampling


def completion_sampling(fields: dict[str, Any]) -> inference_pb2.SamplingParams:
    return protocol.completion_request({"model": "m", "prompt": "Once", **fields})[0].sampling


BOTH_ENDPOINTS = pytest.mark.parametrize(
    "sampling", [chat_sampling, completion_sampling], ids=["chat", "completions"]
)


def named(**spec: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": spec}


def oversized_schema() -> dict[str, Any]:
    return {"type": "object", "description": "x" * MAX_CONSTRAINT_BYTES}


def constraint(sampling: inference_pb2.SamplingParams) -> tuple[str | None, str | None]:
    field = sampling.WhichOneof("constraint")
    return field, getattr(sampling, field) if field else None


GOOD = [
    ({}, (None, None)),
    ({"response_format": None}, (None, None)),
    ({"response_format": {"type": "text"}}, (None, None)),
    ({"response_format": {"type": "json_object"}}, ("json_schema", '{"type": "object"}')),
    (
        {"response_format": named(name="city", schema=CITY, strict=True, description="A city")},
        ("json_schema", json.dumps(CITY)),
    ),
    ({"response_format": named(schema={})}, ("json_schema", "{}")),
    (
        {"response_format": named(name="c", schema=CITY, strict=None)},
        ("json_schema", json.dumps(CITY)),
    ),
    ({"grammar": GRAMMAR}, ("grammar", GRAMMAR)),
    ({"grammar": GRAMMAR, "response_format": {"type": "text"}}, ("grammar", GRAMMAR)),
    # llama.cpp's server reads an empty grammar as none.
    (
        {"grammar": "", "response_format": {"type": "json_object"}},
        ("json_schema", '{"type": "object"}'),
    ),
    ({"grammar": None}, (None, None)),
    ({"grammar": "x" * MAX_CONSTRAINT_BYTES}, ("grammar", "x" * MAX_CONSTRAINT_BYTES)),
]


@BOTH_ENDPOINTS
@pytest.mark.parametrize(("fields", "expected"), GOOD)
def test_constraint_sent(
    sampling: Sampling, fields: dict[str, Any], expected: tuple[str | None, str | None]
) -> None:
    assert constraint(sampling(fields)) == expected


@BOTH_ENDPOINTS
@pytest.mark.parametrize("response_format", [None, {"type": "text"}])
def test_text_format_leaves_the_request_unchanged(
    sampling: Sampling, response_format: dict[str, Any] | None
) -> None:
    fields = {"temperature": 0.5, "seed": 3}
    plain = sampling(fields).SerializeToString()
    assert sampling({**fields, "response_format": response_format}).SerializeToString() == plain


def test_constraint_keeps_other_sampling_fields() -> None:
    sent = chat_sampling(
        {
            "temperature": 0,
            "max_tokens": 60,
            "logprobs": True,
            "response_format": named(schema=CITY),
        }
    )
    assert (sent.temperature, sent.max_tokens, sent.logprobs) == (0, 60, True)
    assert json.loads(sent.json_schema) == CITY


SPEC = "response_format.json_schema"
BAD = [
    ({"response_format": "json"}, "response_format"),
    ({"response_format": ["json_object"]}, "response_format"),
    ({"response_format": {}}, "response_format"),
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"response_format": {"type": None}}, "response_format"),
    ({"response_format": {"type": "json_schema"}}, SPEC),
    ({"response_format": {"type": "json_schema", "json_schema": "city"}}, SPEC),
    ({"response_format": named(name="city")}, f"{SPEC}.schema"),
    ({"response_format": named(name="city", schema=None)}, f"{SPEC}.schema"),
    ({"response_format": named(name="city", schema=[CITY])}, f"{SPEC}.schema"),
    ({"response_format": named(name="city", schema=json.dumps(CITY))}, f"{SPEC}.schema"),
    ({"response_format": named(name="city", schema=True)}, f"{SPEC}.schema"),
    ({"response_format": named(name=5, schema=CITY)}, f"{SPEC}.name"),
    ({"response_format": named(schema=CITY, strict="yes")}, f"{SPEC}.strict"),
    ({"response_format": named(schema=CITY, description=["a"])}, f"{SPEC}.description"),
    ({"response_format": named(schema=oversized_schema())}, f"{SPEC}.schema"),
    ({"grammar": 5}, "grammar"),
    ({"grammar": ["root ::= x"]}, "grammar"),
    ({"grammar": GRAMMAR, "response_format": {"type": "json_object"}}, "grammar"),
    ({"grammar": GRAMMAR, "response_format": named(schema=CITY)}, "grammar"),
    ({"grammar": "x" * (MAX_CONSTRAINT_BYTES + 1)}, "grammar"),
    ({"grammar": "é" * (MAX_CONSTRAINT_BYTES // 2 + 1)}, "grammar"),
    ({"grammar": 'root ::= "\ud800"'}, "grammar"),
]


@BOTH_ENDPOINTS
@pytest.mark.parametrize(("fields", "param"), BAD)
def test_bad_constraint_is_400_naming_the_param(
    sampling: Sampling, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        sampling(fields)
    assert (caught.value.status, caught.value.param) == (400, param)
    assert param.split(".")[-1] in caught.value.message


def test_grammar_is_a_known_field(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="rest_bridge.protocol")
    chat_sampling({"grammar": GRAMMAR, "response_format": {"type": "text"}})
    assert "ignoring" not in caplog.text


async def test_chat_json_schema_reaches_the_core(bridge: TestClient, core: FakeCore) -> None:
    fields = {"temperature": 0, "response_format": named(name="city", schema=CITY)}
    response = await bridge.post("/v1/chat/completions", json=_chat(**fields))
    assert response.status == 200
    assert (await response.json())["choices"][0]["message"]["content"] == "Hello there"
    (sent,) = core.inference.requests
    assert sent.sampling.WhichOneof("constraint") == "json_schema"
    assert json.loads(sent.sampling.json_schema) == CITY


async def test_completion_grammar_and_json_object_reach_the_core(
    bridge: TestClient, core: FakeCore
) -> None:
    for fields in ({"grammar": GRAMMAR}, {"response_format": {"type": "json_object"}}):
        response = await bridge.post("/v1/completions", json=_completion(**fields))
        assert response.status == 200
    first, second = (sent.sampling for sent in core.inference.requests)
    assert (first.WhichOneof("constraint"), first.grammar) == ("grammar", GRAMMAR)
    assert (second.WhichOneof("constraint"), second.json_schema) == (
        "json_schema",
        '{"type": "object"}',
    )


async def test_text_format_sends_no_constraint(bridge: TestClient, core: FakeCore) -> None:
    response = await bridge.post(
        "/v1/chat/completions", json=_chat(response_format={"type": "text"})
    )
    assert response.status == 200
    assert core.inference.requests[0].sampling.WhichOneof("constraint") is None


@pytest.mark.parametrize(
    ("url", "fields", "param"),
    [
        ("/v1/chat/completions", {"response_format": named(name="city")}, f"{SPEC}.schema"),
        ("/v1/chat/completions", {"response_format": {"type": "yaml"}}, "response_format"),
        (
            "/v1/completions",
            {"grammar": GRAMMAR, "response_format": {"type": "json_object"}},
            "grammar",
        ),
    ],
)
async def test_bad_constraint_is_400_before_the_core(
    bridge: TestClient, core: FakeCore, url: str, fields: dict[str, Any], param: str
) -> None:
    body = _chat(**fields) if url.endswith("chat/completions") else _completion(**fields)
    response = await bridge.post(url, json=body)
    assert response.status == 400
    error = (await response.json())["error"]
    assert (error["param"], error["code"]) == (param, "invalid_value")
    assert core.inference.requests == []


@pytest.mark.parametrize(
    ("url", "fields", "core_param", "param"),
    [
        (
            "/v1/chat/completions",
            {"response_format": named(schema={"type": "nonsense"})},
            "sampling.json_schema",
            "response_format",
        ),
        ("/v1/completions", {"grammar": "root ::= ("}, "sampling.grammar", "grammar"),
    ],
)
async def test_core_compile_error_names_the_openai_field(
    bridge: TestClient,
    core: FakeCore,
    url: str,
    fields: dict[str, Any],
    core_param: str,
    param: str,
) -> None:
    details = "cannot compile the constraint"
    core.inference.script = [rpc_error(grpc.StatusCode.INVALID_ARGUMENT, details, core_param)]
    body = _chat(**fields) if url.endswith("chat/completions") else _completion(**fields)
    response = await bridge.post(url, json=body)
    assert response.status == 400
    error = (await response.json())["error"]
    assert (error["message"], error["param"]) == (details, param)


def _chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], **fields}


def _completion(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL_ID, "prompt": "Once", **fields}
