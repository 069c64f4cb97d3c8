"""Ollama's API on the bridge, on the fake core: shapes, translation to gRPC, errors, NDJSON."""

from __future__ import annotations

import json
from typing import Any

import grpc
from aiohttp.test_utils import TestClient
from minerva.v1 import inference_pb2, models_pb2

from tests.bridge.conftest import (
    HANG,
    MODEL_ID,
    FakeCore,
    MakeBridge,
    chunk,
    final,
    rpc_error,
    sample_model,
)

NAME = f"{MODEL_ID}:latest"
ASK = [{"role": "user", "content": "Hi"}]


def lines(body: str) -> list[Any]:
    return [json.loads(line) for line in body.splitlines() if line]


async def test_root_and_version(bridge: TestClient) -> None:
    root = await bridge.get("/")
    assert (root.status, await root.text()) == (200, "Ollama is running")
    assert (await bridge.head("/")).status == 200
    version = await (await bridge.get("/api/version")).json()
    assert version["version"].count(".") == 2


async def test_tags_list_the_registry_with_ollama_details(bridge: TestClient) -> None:
    body = await (await bridge.get("/api/tags")).json()
    [model] = body["models"]
    assert (model["name"], model["model"], model["size"]) == (NAME, NAME, 98_000_000)
    assert len(model["digest"]) == 64 and model["modified_at"].endswith("Z")
    assert model["details"] == {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "134.52M",
        "quantization_level": "Q4_1",
    }


async def test_show_gives_template_info_and_capabilities(
    bridge: TestClient, core: FakeCore
) -> None:
    body = await (await bridge.post("/api/show", json={"model": NAME})).json()
    assert body["template"] == "{{ messages }}"
    assert body["capabilities"] == ["completion", "tools", "embedding"]
    assert body["model_info"]["general.architecture"] == "llama"
    assert body["model_info"]["tokenizer.ggml.tokens"] == []
    assert body["model_info"]["general.parameter_count"] == 134_515_008
    sent = core.models.requests[-1]
    assert (sent.model_id, sent.with_header, sent.with_header_arrays) == (MODEL_ID, True, False)
    verbose = await (await bridge.post("/api/show", json={"name": NAME, "verbose": True})).json()
    assert verbose["model_info"]["tokenizer.ggml.tokens"] == ["a", "b"]


async def test_ps_shows_loaded_models_only(bridge: TestClient, core: FakeCore) -> None:
    loaded = sample_model()
    loaded.memory_bytes, loaded.expires_unix = 123_456, 1_700_000_000.0
    cold = sample_model("cold")
    cold.load_state = models_pb2.LOAD_STATE_UNLOADED
    core.models.models = [loaded, cold]
    [model] = (await (await bridge.get("/api/ps")).json())["models"]
    assert (model["name"], model["size"], model["size_vram"]) == (NAME, 123_456, 0)
    assert model["expires_at"].startswith("2023-11-14T22:13:20")
    assert model["context_length"] == 4096


async def test_chat_streams_ndjson_and_ends_with_the_counts(
    bridge: TestClient, core: FakeCore
) -> None:
    response = await bridge.post("/api/chat", json={"model": NAME, "messages": ASK})
    assert response.status == 200 and response.content_type == "application/x-ndjson"
    objects = lines(await response.text())
    assert [o["message"]["content"] for o in objects] == ["Hello", " there", ""]
    assert [o["done"] for o in objects] == [False, False, True]
    last = objects[-1]
    assert (last["done_reason"], last["prompt_eval_count"], last["eval_count"]) == ("stop", 7, 3)
    assert all(o["model"] == NAME and o["created_at"].endswith("Z") for o in objects)
    sent = core.inference.requests[0]
    assert isinstance(sent, inference_pb2.ChatRequest) and sent.model_id == MODEL_ID


async def test_chat_without_streaming_is_one_object(bridge: TestClient) -> None:
    body = {"model": NAME, "messages": ASK, "stream": False}
    data = await (await bridge.post("/api/chat", json=body)).json()
    assert data["message"] == {"role": "assistant", "content": "Hello there"}
    assert data["done"] is True and data["done_reason"] == "stop"


async def test_chat_request_fields_reach_the_core(bridge: TestClient, core: FakeCore) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    body = {
        "model": NAME,
        "messages": ASK,
        "stream": False,
        "keep_alive": "10m",
        "format": {"type": "object"},
        "tools": [tool],
        "options": {"num_ctx": 1024, "num_predict": 5, "seed": 3},
    }
    assert (await bridge.post("/api/chat", json=body)).status == 200
    sent = core.inference.requests[0]
    assert (sent.keep_alive_seconds, sent.context_size, sent.sampling.max_tokens) == (600, 1024, 5)
    assert not sent.HasField("context_limit")  # num_ctx loads the model; it caps nothing
    assert json.loads(sent.sampling.json_schema) == {"type": "object"}
    assert [t.name for t in sent.tools] == ["f"]


async def test_a_request_without_keep_alive_sends_the_ollama_default(
    make_bridge: MakeBridge, core: FakeCore
) -> None:
    """Ollama resets the expiry on every request; only the OpenAI routes leave it unset (the
    core's "unset keeps the last setting")."""
    bridge = await make_bridge(ollama_keep_alive_s=120.0)
    chat = {"model": NAME, "messages": ASK, "stream": False}
    assert (await bridge.post("/api/chat", json=chat)).status == 200
    generate = {"model": NAME, "prompt": "Hi", "stream": False}
    assert (await bridge.post("/api/generate", json=generate)).status == 200
    assert (await bridge.post("/api/generate", json={**generate, "raw": True})).status == 200
    assert (await bridge.post("/api/embed", json={"model": NAME, "input": "a"})).status == 200
    sent = core.inference.requests
    assert [r.keep_alive_seconds for r in sent if r.HasField("keep_alive_seconds")] == [120] * 4
    assert (await bridge.post("/api/generate", json={"model": NAME})).status == 200
    assert core.models.requests[-1].keep_alive_seconds == 120
    openai = {"model": MODEL_ID, "messages": ASK}
    assert (await bridge.post("/v1/chat/completions", json=openai)).status == 200
    assert not core.inference.requests[-1].HasField("keep_alive_seconds")


async def test_num_ctx_asks_the_core_to_load_with_that_context(
    bridge: TestClient, core: FakeCore
) -> None:
    options = {"options": {"num_ctx": 512}}
    generate = {"model": NAME, "prompt": "Hi", "stream": False, **options}
    assert (await bridge.post("/api/generate", json=generate)).status == 200
    assert (await bridge.post("/api/generate", json={**generate, "raw": True})).status == 200
    embed = {"model": NAME, "input": ["a"], **options}
    assert (await bridge.post("/api/embed", json=embed)).status == 200
    assert [r.context_size for r in core.inference.requests] == [512] * 3
    assert (await bridge.post("/api/chat", json={"model": NAME, **options})).status == 200
    assert (await bridge.post("/api/embed", json={"model": NAME, **options})).status == 200
    loads = core.models.requests[-2:]
    assert [(r.model_id, r.context_size) for r in loads] == [(MODEL_ID, 512)] * 2
    assert (await bridge.post("/api/generate", json={"model": NAME, "prompt": "Hi"})).status == 200
    assert not core.inference.requests[-1].HasField("context_size")
    bad = await bridge.post("/api/embed", json={**embed, "options": {"num_ctx": 0}})
    assert bad.status == 400 and "options.num_ctx" in (await bad.json())["error"]


async def test_num_thread_asks_the_core_for_that_many_threads(
    bridge: TestClient, core: FakeCore
) -> None:
    options = {"options": {"num_thread": 2}}
    generate = {"model": NAME, "prompt": "Hi", "stream": False, **options}
    assert (await bridge.post("/api/generate", json=generate)).status == 200
    assert (await bridge.post("/api/generate", json={**generate, "raw": True})).status == 200
    chat = {"model": NAME, "messages": ASK, "stream": False, **options}
    assert (await bridge.post("/api/chat", json=chat)).status == 200
    embed = {"model": NAME, "input": ["a"], **options}
    assert (await bridge.post("/api/embed", json=embed)).status == 200
    legacy = {"model": NAME, "prompt": "a", **options}
    assert (await bridge.post("/api/embeddings", json=legacy)).status == 200
    assert [r.threads for r in core.inference.requests] == [2] * 5
    assert (await bridge.post("/api/chat", json={"model": NAME, **options})).status == 200
    assert (await bridge.post("/api/embed", json={"model": NAME, **options})).status == 200
    loads = core.models.requests[-2:]
    assert [(r.model_id, r.threads) for r in loads] == [(MODEL_ID, 2)] * 2
    assert (await bridge.post("/api/generate", json={"model": NAME, "prompt": "Hi"})).status == 200
    assert not core.inference.requests[-1].HasField("threads")  # unset keeps the current count
    sent = len(core.inference.requests)
    for path, body in [("/api/chat", chat), ("/api/embed", embed), ("/api/generate", generate)]:
        bad = await bridge.post(path, json={**body, "options": {"num_thread": -1}})
        assert bad.status == 400 and "options.num_thread" in (await bad.json())["error"]
    assert len(core.inference.requests) == sent  # refused before reaching the core
    zero = await bridge.post("/api/generate", json={**generate, "options": {"num_thread": 0}})
    assert zero.status == 200  # Ollama's "default": nothing asked of the core
    assert not core.inference.requests[-1].HasField("threads")


async def test_tool_calls_come_whole_with_object_arguments(
    bridge: TestClient, core: FakeCore
) -> None:
    first = chunk("", 1)
    first.tool_calls.extend(
        [
            inference_pb2.ToolCallDelta(
                call_index=0, id="c1", name="get_weather", arguments='{"city":'
            ),
            inference_pb2.ToolCallDelta(call_index=0, arguments=' "Paris"}'),
        ]
    )
    second = chunk("", 2)
    second.tool_calls.append(
        inference_pb2.ToolCallDelta(call_index=1, id="c2", name="now", arguments="{}")
    )
    core.inference.script = [first, second, final(choices=[inference_pb2.FINISH_REASON_TOOL_CALLS])]
    objects = lines(
        await (await bridge.post("/api/chat", json={"model": NAME, "messages": ASK})).text()
    )
    calls = [c for o in objects for c in o["message"].get("tool_calls", [])]
    assert calls == [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"function": {"name": "now", "arguments": {}}},
    ]
    assert objects[-1]["done_reason"] == "stop"
    whole = await (
        await bridge.post("/api/chat", json={"model": NAME, "messages": ASK, "stream": False})
    ).json()
    assert whole["message"]["tool_calls"] == calls


async def test_generate_templates_the_prompt_unless_raw(bridge: TestClient, core: FakeCore) -> None:
    body = {"model": NAME, "prompt": "Why?", "system": "Be brief.", "stream": False}
    data = await (await bridge.post("/api/generate", json=body)).json()
    assert data["response"] == "Hello there" and data["done"] is True
    templated = core.inference.requests[-1]
    assert [(m.role, m.content) for m in templated.messages] == [
        ("system", "Be brief."),
        ("user", "Why?"),
    ]
    await bridge.post("/api/generate", json={**body, "raw": True})
    raw = core.inference.requests[-1]
    assert isinstance(raw, inference_pb2.GenerateRequest) and raw.text == "Why?"


async def test_an_empty_prompt_loads_and_keep_alive_zero_unloads(
    bridge: TestClient, core: FakeCore
) -> None:
    loaded = await (await bridge.post("/api/generate", json={"model": NAME})).json()
    assert (loaded["done"], loaded["done_reason"], loaded["response"]) == (True, "load", "")
    assert isinstance(core.models.requests[-1], models_pb2.LoadModelRequest)
    body = {"model": NAME, "messages": [], "keep_alive": 0}
    unloaded = await (await bridge.post("/api/chat", json=body)).json()
    assert unloaded["done_reason"] == "unload"
    assert isinstance(core.models.requests[-1], models_pb2.UnloadModelRequest)
    assert core.inference.requests == []


async def test_errors_take_ollamas_shape(bridge: TestClient, core: FakeCore) -> None:
    core.inference.script = [rpc_error(grpc.StatusCode.NOT_FOUND, "unknown model 'x'", "model_id")]
    missing = await bridge.post("/api/chat", json={"model": "x", "messages": ASK})
    assert (missing.status, await missing.json()) == (404, {"error": "model 'x' not found"})
    thinking = await bridge.post("/api/chat", json={"model": NAME, "messages": ASK, "think": True})
    assert (thinking.status, await thinking.json()) == (
        400,
        {"error": f'"{NAME}" does not support thinking'},
    )
    insert = await bridge.post("/api/generate", json={"model": NAME, "prompt": "a", "suffix": "b"})
    assert insert.status == 400 and "does not support insert" in (await insert.json())["error"]
    busy = rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")
    core.inference.script = [busy]
    assert (await bridge.post("/api/chat", json={"model": NAME, "messages": ASK})).status == 503


async def test_a_failure_after_the_stream_started_is_an_error_line(
    bridge: TestClient, core: FakeCore
) -> None:
    core.inference.script = [chunk("Hel", 1), rpc_error(grpc.StatusCode.INTERNAL, "boom")]
    objects = lines(
        await (await bridge.post("/api/chat", json={"model": NAME, "messages": ASK})).text()
    )
    assert objects[0]["message"]["content"] == "Hel"
    assert objects[-1] == {"error": "boom"}


async def test_a_client_that_leaves_cancels_the_core_call(
    bridge: TestClient, core: FakeCore
) -> None:
    core.inference.script = [chunk("a", 1), HANG]
    response = await bridge.post("/api/chat", json={"model": NAME, "messages": ASK})
    await response.content.readline()
    response.close()
    await core.inference.calls[0].cancelled.wait()


async def test_embed_and_legacy_embeddings(bridge: TestClient, core: FakeCore) -> None:
    data = await (await bridge.post("/api/embed", json={"model": NAME, "input": ["a", "b"]})).json()
    assert data["embeddings"] == [[0.5, -0.25, 1.0]] * 2 and data["prompt_eval_count"] == 8
    sent = core.inference.requests[-1]
    assert (sent.normalize, sent.truncate) == (True, True)
    legacy = await (
        await bridge.post("/api/embeddings", json={"model": NAME, "prompt": "a"})
    ).json()
    assert legacy == {"embedding": [0.5, -0.25, 1.0]}
    assert core.inference.requests[-1].normalize is False
    strict = {"model": NAME, "input": "a", "truncate": False}
    await bridge.post("/api/embed", json=strict)
    assert core.inference.requests[-1].truncate is False


async def test_registry_operations_are_refused_clearly(bridge: TestClient) -> None:
    for method, path in (("POST", "/api/pull"), ("POST", "/api/create"), ("DELETE", "/api/delete")):
        response = await bridge.request(method, path, json={"model": "x"})
        assert response.status == 501
        assert "serves the models in its registry" in (await response.json())["error"]
