"""Schemathesis against the bridge's own /openapi.json, on a real port over a fake core: no 5xx,
and every response's status, content type, headers and body are the ones documented."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from minerva.v1 import inference_pb2, models_pb2
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from rest_bridge.app import create_app
from rest_bridge.openapi import document
from rest_bridge.openapi.ollama_paths import NDJSON, NOT_DONE
from rest_bridge.settings import Settings
from tests.bridge.conftest import CORE_ADDRESS, FakeCore, FakeInference, FakeModels, sample_model

# Examples per operation and mode, fixed by derandomize: the whole file runs in about 30 s on
# two cores. Raise it locally to search harder.
MAX_EXAMPLES = 20
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
DOCUMENT = document()
KEY = "sk-schemathesis"
# Routes that exist to refuse (Ollama's pull, push, ...): their 501 is the answer, not a fault.
REFUSING = [*NOT_DONE, "/api/blobs/{digest}"]
CONFIG = schemathesis.Config.from_dict(
    {
        "operations": [
            {
                "include-path": REFUSING,
                "checks": {
                    "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "501"]}
                },
            }
        ]
    }
)
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


class AnyModels(FakeModels):
    """Every model id names a model, so that generated requests get past the lookup."""

    async def GetModel(self, request: Any, metadata: Any = ()) -> models_pb2.GetModelResponse:
        return models_pb2.GetModelResponse(
            model=sample_model(request.model_id), chat_template="{{ messages }}", header_json="{}"
        )

    async def _load(self, request: Any) -> AsyncIterator[Any]:
        yield models_pb2.LoadModelResponse(stage=models_pb2.LOAD_STAGE_READY)


class AnyTokens(FakeInference):
    """Detokenizes any ids (the shared fake reads them as bytes, which most ids are not)."""

    async def Detokenize(
        self, request: Any, metadata: Any = ()
    ) -> inference_pb2.DetokenizeResponse:
        return inference_pb2.DetokenizeResponse(text="".join(f"<{i}>" for i in request.token_ids))


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    yield from serve(Settings(core_address=CORE_ADDRESS))


@pytest.fixture(scope="module")
def keyed_url() -> Iterator[str]:
    yield from serve(Settings(core_address=CORE_ADDRESS, api_keys=(KEY,)))


def serve(bridge_settings: Settings) -> Iterator[str]:
    """The bridge on a real port, in a thread with its own event loop: schemathesis' requests
    block, so the bridge cannot share the test's loop."""
    core = FakeCore(inference=AnyTokens(), models=AnyModels())
    app = create_app(bridge_settings, core.client())
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


def streamed(case: Case) -> Case:
    """The generator leaves `stream` unset or false: this asks for the server-sent events."""
    if isinstance(case.body, dict):
        case.body["stream"] = True
    return case


def has_inputs(operation: Any) -> bool:
    """Negative data needs something to break: a body or a parameter."""
    return bool(operation.body or operation.path_parameters or operation.query)


def serves_sse(operation: Any) -> bool:
    responses = DOCUMENT["paths"][operation.path][operation.method.lower()]["responses"]
    return "text/event-stream" in responses.get("200", {}).get("content", {})


RUNS = [
    *[
        pytest.param(op, GenerationMode.POSITIVE, False, id=f"{op.label} positive")
        for op in OPERATIONS
    ],
    *[
        pytest.param(op, GenerationMode.NEGATIVE, False, id=f"{op.label} negative")
        for op in OPERATIONS
        if has_inputs(op)
    ],
    *[
        pytest.param(op, GenerationMode.POSITIVE, True, id=f"{op.label} streamed")
        for op in OPERATIONS
        if serves_sse(op)
    ],
]


@pytest.mark.parametrize(("operation", "mode", "stream"), RUNS)
def test_bridge_answers_as_documented(
    base_url: str, operation: Any, mode: GenerationMode, stream: bool
) -> None:
    strategy: st.SearchStrategy[Case] = operation.as_strategy(generation_mode=mode)
    if stream:
        strategy = strategy.map(streamed)
    lines = NdjsonLines(operation)

    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def answers_as_documented(case: Case) -> None:
        response = case.call_and_validate(base_url=base_url, checks=CHECKS)
        lines.check(response.status_code, response.headers, response.content)

    answers_as_documented()


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_without_the_key_answers_as_documented(keyed_url: str, operation: Any) -> None:
    """With keys set, a caller without one gets the documented 401 (public routes answer)."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=3, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    def answers_as_documented(case: Case) -> None:
        response = case.call_and_validate(base_url=keyed_url, checks=CHECKS)
        public = operation.path in ("/health", "/openapi.json")
        assert response.status_code == (200 if public else 401)

    answers_as_documented()


class NdjsonLines:
    """Schemathesis reads no NDJSON, so each line of an Ollama stream is checked here against
    the schema the document gives that media type (it found raw U+2028 in model names cutting
    lines in two for splitlines)."""

    def __init__(self, operation: Any) -> None:
        self.responses = DOCUMENT["paths"][operation.path][operation.method.lower()]["responses"]

    def check(self, status: int, headers: dict[str, list[str]], content: bytes) -> None:
        content_type = headers.get("content-type", [""])[0]
        if not content_type.startswith(NDJSON):
            return
        line_schema = self.responses[str(status)]["content"][NDJSON]["schema"]
        # The document's components resolve the schema's $refs.
        validator = jsonschema_rs.Draft202012Validator(
            {**line_schema, "components": DOCUMENT["components"]}
        )
        lines = content.decode().removesuffix("\n").split("\n")
        for line in lines:
            validator.validate(json.loads(line))
        assert json.loads(lines[-1])["done"] is True
        # Clients that split with str.splitlines (httpx, so the ollama package) see the same.
        assert content.decode().splitlines() == lines


# What schemathesis found, pinned: each was a 500 or an answer clients could not read.
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
FINDINGS = [
    ("/v1/chat/completions", {**CHAT, "messages": [{"role": ["user"], "content": "x"}]}, 400),
    ("/apply-template", {"messages": [{"role": {}, "content": "x"}]}, 400),
    ("/api/chat", {**CHAT, "stream": False, "logprobs": True, "top_logprobs": 2**40}, 400),
    ("/api/chat", {**CHAT, "stream": False, "logprobs": True, "top_logprobs": 2.0}, 200),
    ("/api/chat", {**CHAT, "stream": False, "keep_alive": 10**400}, 400),
    ("/v1/completions", {"model": "m", "prompt": [1.0, 2.0]}, 200),
    ("/v1/embeddings", {"model": "m", "input": [3.0, 4.0]}, 200),
    ("/detokenize", {"tokens": [104.0, 105.0]}, 200),
]


@pytest.mark.parametrize(("path", "body", "status"), FINDINGS)
async def test_schemathesis_findings_stay_fixed(
    bridge: Any, path: str, body: dict[str, Any], status: int
) -> None:
    response = await bridge.post(path, data=json.dumps(body))
    assert response.status == status, await response.text()


async def test_ndjson_lines_survive_splitlines(bridge: Any) -> None:
    """A model name (or generated text) holding U+2028 or NEL went out raw in NDJSON, and
    clients splitting lines like str.splitlines (httpx, so the ollama package) cut it in two."""
    name = "m\u2028x\x85y\u2029"
    response = await bridge.post("/api/chat", json={**CHAT, "model": name})
    text = await response.text()
    lines = text.splitlines()
    assert len(lines) == text.count("\n") == 3  # two pieces of text and the last object
    assert all(json.loads(line)["model"] == name for line in lines)
