"""The bridge on hostile request bodies: mutated OpenAI and Ollama bodies, any JSON, any bytes.

Property: never a 5xx; an error is JSON in the route's envelope (OpenAI's {"error": {message,
type, param, code}}, Ollama's {"error": message}); a success streams or answers without an
error inside. The core is a stub that always succeeds, so any failure is the bridge's own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import example, given
from hypothesis import strategies as st
from minerva.v1 import inference_pb2

from rest_bridge.app import create_app
from rest_bridge.errors import is_ollama_path
from rest_bridge.protocol import CHAT_FIELDS, COMPLETION_FIELDS, EMBEDDING_FIELDS
from rest_bridge.settings import Settings
from tests.bridge.conftest import CORE_ADDRESS, MODEL_ID, FakeCore, FakeInference
from tests.fuzz.conftest import FUZZ
from tests.fuzz.hostile import json_values, mutated_bytes, mutated_json

TOOLS = [
    {
        "type": "function",
        "function": {"name": "f", "description": "d", "parameters": {"type": "object"}},
    }
]
HISTORY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "ok"},
]
OLLAMA_OPTIONS = {"temperature": 0.1, "num_predict": 8, "seed": 3, "stop": ["x"], "num_ctx": 512}
# One valid body per route (several for the richest): mutations start close to real requests.
SEEDS: list[tuple[str, dict[str, Any]]] = [
    (
        "/v1/chat/completions",
        {
            "model": MODEL_ID,
            "messages": HISTORY,
            "temperature": 0.5,
            "top_p": 0.9,
            "max_tokens": 8,
            "stop": ["\n"],
            "seed": 1,
            "logit_bias": {"1": 2},
            "logprobs": True,
            "top_logprobs": 2,
            "tools": TOOLS,
            "tool_choice": {"type": "function", "function": {"name": "f"}},
        },
    ),
    (
        "/v1/chat/completions",
        {
            "model": MODEL_ID,
            "messages": [{"role": "user", "content": "Hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "strict": True, "schema": {"type": "object"}},
            },
        },
    ),
    (
        "/v1/completions",
        {"model": MODEL_ID, "prompt": "Once", "max_tokens": 4, "logprobs": 2, "stream": True},
    ),
    ("/v1/completions", {"model": MODEL_ID, "prompt": [1, 2, 3], "seed": -5, "stop": "x"}),
    ("/v1/embeddings", {"model": MODEL_ID, "input": ["a", "b"], "encoding_format": "base64"}),
    ("/v1/embeddings", {"model": MODEL_ID, "input": [[1, 2], [3]]}),
    ("/tokenize", {"content": "hi", "with_pieces": True, "add_special": False}),
    ("/detokenize", {"model": MODEL_ID, "tokens": [104, 105]}),
    ("/apply-template", {"messages": HISTORY, "tools": TOOLS, "tool_choice": "auto"}),
    (
        "/api/chat",
        {
            "model": MODEL_ID + ":latest",
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]},
                {"role": "tool", "tool_name": "f", "content": "ok"},
            ],
            "options": OLLAMA_OPTIONS,
            "format": "json",
            "keep_alive": "5m",
            "stream": False,
            "tools": TOOLS,
            "logprobs": True,
            "top_logprobs": 2,
        },
    ),
    (
        "/api/generate",
        {"model": MODEL_ID, "prompt": "hi", "system": "be brief", "options": OLLAMA_OPTIONS},
    ),
    ("/api/generate", {"model": MODEL_ID, "prompt": "hi", "raw": True, "keep_alive": 30}),
    ("/api/generate", {"model": MODEL_ID, "keep_alive": 0}),
    ("/api/embed", {"model": MODEL_ID, "input": ["a"], "truncate": True, "keep_alive": "1m"}),
    ("/api/embeddings", {"model": MODEL_ID, "prompt": "a"}),
    ("/api/show", {"model": MODEL_ID, "verbose": True}),
]
ROUTES = sorted({route for route, _ in SEEDS})
OLLAMA_FIELDS = {
    *("model", "name", "messages", "prompt", "system", "raw", "format", "options", "keep_alive"),
    *("stream", "think", "images", "suffix", "template", "context", "tools", "logprobs"),
    *("top_logprobs", "input", "truncate", "dimensions", "verbose", "role", "content"),
    *("tool_calls", "tool_name", "function", "arguments", "name", "type", "text"),
    *("temperature", "top_p", "min_p", "repeat_penalty", "presence_penalty", "num_predict"),
    *("frequency_penalty", "top_k", "seed", "stop", "num_ctx", "repeat_last_n", "mirostat"),
}
FIELD_NAMES = tuple(sorted(CHAT_FIELDS | COMPLETION_FIELDS | EMBEDDING_FIELDS | OLLAMA_FIELDS))


class FuzzInference(FakeInference):
    """The bridge tests' stub, but Detokenize answers any ids (the original decodes them)."""

    async def Detokenize(
        self, request: Any, metadata: Any = ()
    ) -> inference_pb2.DetokenizeResponse:
        return inference_pb2.DetokenizeResponse(text=f"{len(request.token_ids)} tokens")


class Bridge:
    """The bridge app on the stub core, served on a loop of its own for a whole module (one
    app for every example keeps the test fast)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = self.loop.run_until_complete(self._start())

    async def _start(self) -> TestClient:
        core = FakeCore(inference=FuzzInference())
        app = create_app(Settings(core_address=CORE_ADDRESS), core.client())
        client = TestClient(TestServer(app))
        await client.start_server()
        return client

    def post(self, route: str, body: bytes) -> tuple[int, str, bytes]:
        return self.loop.run_until_complete(self._post(route, body))

    async def _post(self, route: str, body: bytes) -> tuple[int, str, bytes]:
        headers = {"Content-Type": "application/json"}
        async with self.client.post(route, data=body, headers=headers) as response:
            return response.status, response.content_type, await response.read()

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


@pytest.fixture(scope="module")
def bridge() -> Iterator[Bridge]:
    running = Bridge()
    yield running
    running.close()


def assert_clean(route: str, status: int, content_type: str, raw: bytes) -> None:
    """The property: no 5xx, and every body well formed in the route's dialect."""
    text = raw.decode("utf-8")
    assert status < 500, f"{route} answered {status}: {text[:500]}"
    if status >= 400:
        assert content_type == "application/json", content_type
        assert_error_envelope(route, json.loads(text))
    elif content_type == "text/event-stream":
        events = [block.removeprefix("data: ") for block in text.split("\n\n") if block]
        assert events[-1] == "[DONE]", events[-1]
        for event in events[:-1]:
            assert "error" not in json.loads(event), event
    elif content_type == "application/x-ndjson":
        lines = [json.loads(line) for line in text.splitlines()]
        assert all("error" not in line for line in lines), lines
        assert lines[-1]["done"] is True
    else:
        assert content_type == "application/json", content_type
        assert isinstance(json.loads(text), dict)


def assert_error_envelope(route: str, body: Any) -> None:
    if is_ollama_path(route):
        assert list(body) == ["error"], body
        assert isinstance(body["error"], str) and body["error"], body
        return
    error = body["error"]
    assert sorted(error) == ["code", "message", "param", "type"], body
    assert isinstance(error["message"], str) and error["message"], body
    assert error["type"] == "invalid_request_error", body
    assert all(error[key] is None or isinstance(error[key], str) for key in ("param", "code"))


def test_seeds_succeed(bridge: Bridge) -> None:
    """The mutations start from bodies the bridge serves (so they probe past the first check)."""
    for route, seed in SEEDS:
        status, content_type, raw = bridge.post(route, json.dumps(seed).encode())
        assert status == 200, (route, raw[:300])
        assert_clean(route, status, content_type, raw)


seeded = st.sampled_from(SEEDS).flatmap(
    lambda pair: st.tuples(st.just(pair[0]), mutated_json(pair[1], names=FIELD_NAMES))
)


def _chat(**fields: Any) -> tuple[str, dict[str, Any]]:
    return "/v1/chat/completions", {"model": MODEL_ID, "messages": HISTORY[1:2], **fields}


def _ollama_chat(**fields: Any) -> tuple[str, dict[str, Any]]:
    return "/api/chat", {"model": MODEL_ID, "messages": HISTORY[1:2], **fields}


# Bodies that once answered 500, pinned so that every run (not only a lucky one) checks them.
@example(case=_ollama_chat(messages=[{"role": "assistant", "content": "", "tool_calls": 1}]))
@example(case=_ollama_chat(logprobs=True, top_logprobs=2**63))
@example(case=_chat(logit_bias={"9" * 5000: 1}))
@example(case=_chat(temperature=10**400))
@example(case=_chat(messages=[{"role": [], "content": "Hi"}]))
@example(case=("/api/generate", {"model": MODEL_ID, "keep_alive": 10**400}))
@FUZZ
@given(case=seeded)
def test_mutated_bodies(bridge: Bridge, case: tuple[str, Any]) -> None:
    route, body = case
    assert_clean(route, *bridge.post(route, json.dumps(body).encode()))


@FUZZ
@given(route=st.sampled_from(ROUTES), body=json_values)
def test_any_json(bridge: Bridge, route: str, body: Any) -> None:
    assert_clean(route, *bridge.post(route, json.dumps(body).encode()))


deep = st.integers(100, 3000).map(lambda depth: b'{"model": ' + b"[" * depth + b"]" * depth + b"}")
raw_bodies = st.sampled_from(SEEDS).flatmap(
    lambda pair: st.tuples(
        st.just(pair[0]),
        mutated_bytes(json.dumps(pair[1]).encode()) | st.binary(max_size=64) | deep,
    )
)


@FUZZ
@given(case=raw_bodies)
def test_any_bytes(bridge: Bridge, case: tuple[str, bytes]) -> None:
    route, body = case
    assert_clean(route, *bridge.post(route, body))
