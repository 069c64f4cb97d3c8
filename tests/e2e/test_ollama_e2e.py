"""Ollama's API through both processes with the official `ollama` Python client."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import ollama
import pytest

from tests.e2e.conftest import MODEL, Stack, start_stack

pytestmark = pytest.mark.e2e

NAME = f"{MODEL}:latest"
ASK = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}},
            "required": ["city"],
        },
    },
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def ollama_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, ollama_port: int
) -> Iterator[Stack]:
    """Idle models never unload by themselves here, so keep_alive alone decides."""
    own = start_stack(
        tmp_path_factory.mktemp("ollama"),
        models_dir,
        ["--idle-ttl", "0"],
        ["--ollama-listen", f"127.0.0.1:{ollama_port}"],
        None,
    )
    yield own
    own.stop()


@pytest.fixture(scope="module")
def client(stack: Stack, ollama_port: int) -> Iterator[ollama.Client]:
    """On the extra listen address, as OLLAMA_HOST would point a client at it."""
    with ollama.Client(host=f"http://127.0.0.1:{ollama_port}", timeout=60) as own:
        yield own


def test_list_and_show(client: ollama.Client) -> None:
    [model] = client.list().models
    assert model.model == NAME and model.details is not None
    assert (model.details.format, model.details.quantization_level) == ("gguf", "Q4_1")
    shown = client.show(NAME)
    assert shown.modelinfo is not None and shown.modelinfo["general.architecture"] == "llama"
    assert "tools" in (shown.capabilities or []) and "im_start" in (shown.template or "")


def test_chat_streamed_and_not(client: ollama.Client) -> None:
    whole = client.chat(model=NAME, messages=ASK, options={"temperature": 0, "num_predict": 16})
    assert whole.done and whole.message.content and whole.eval_count
    assert whole.prompt_eval_count and whole.total_duration and whole.eval_duration
    parts = list(
        client.chat(
            model=MODEL, messages=ASK, stream=True, options={"temperature": 0, "num_predict": 16}
        )
    )
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts).strip()


def test_generate_seed_stop_and_num_predict(client: ollama.Client) -> None:
    options = {"temperature": 1.0, "seed": 123, "num_predict": 12}
    first = client.generate(model=NAME, prompt="Write a short poem.", options=options)
    again = client.generate(model=NAME, prompt="Write a short poem.", options=options)
    assert first.response == again.response and first.response
    assert first.done_reason == "length" and first.eval_count == 12
    counted = client.generate(
        model=NAME,
        prompt="Count: 1, 2, 3,",
        raw=True,
        options={"temperature": 0, "stop": [","], "num_predict": 20},
    )
    assert "," not in counted.response and counted.done_reason == "stop"


def test_format_json_and_schema(client: ollama.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}},
        "required": ["city"],
    }
    shaped = client.chat(
        model=NAME, messages=ASK, format=schema, options={"temperature": 0, "num_predict": 60}
    )
    assert set(json.loads(shaped.message.content or "")) == {"city"}
    loose = client.generate(
        model=NAME,
        prompt="Describe Paris as JSON.",
        format="json",
        options={"temperature": 0, "num_predict": 80},
    )
    assert loose.done_reason == "stop" and isinstance(json.loads(loose.response), dict)


def test_tools(client: ollama.Client) -> None:
    history = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "sunny, 21 C", "tool_name": "get_weather"},
        {"role": "assistant", "content": "It is sunny and 21 C in Paris."},
        {"role": "user", "content": "What is the weather in Berlin?"},
    ]
    reply = client.chat(
        model=NAME, messages=history, tools=[WEATHER], options={"temperature": 0, "num_predict": 60}
    )
    [call] = reply.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert dict(call.function.arguments) == {"city": "Berlin"}


def test_generate_streamed(client: ollama.Client) -> None:
    options = {"temperature": 0, "num_predict": 8}
    parts = list(
        client.generate(model=NAME, prompt="Once upon a time", stream=True, options=options)
    )
    assert parts[-1].done and parts[-1].done_reason == "length" and parts[-1].eval_count == 8
    assert not any(p.done for p in parts[:-1]) and len(parts) >= 2
    whole = client.generate(model=NAME, prompt="Once upon a time", options=options)
    assert "".join(p.response for p in parts) == whole.response


def test_embed(client: ollama.Client) -> None:
    vectors = client.embed(model=NAME, input=["a cat", "a dog"]).embeddings
    assert len(vectors) == 2 and len(vectors[0]) == 576
    with pytest.raises(ollama.ResponseError) as err:
        client.embed(model=NAME, input=["a cat", "", "a dog"])
    assert err.value.status_code == 400 and "input[1] is empty" in err.value.error
    assert abs(sum(x * x for x in vectors[0]) - 1.0) < 1e-3
    legacy = client.embeddings(model=NAME, prompt="a cat").embedding
    assert len(legacy) == 576


def test_ps_and_keep_alive_zero_unloads(client: ollama.Client) -> None:
    client.generate(model=NAME, prompt="Hi", options={"num_predict": 1}, keep_alive="10m")
    [running] = client.ps().models
    assert running.model == NAME and running.size and running.expires_at is not None
    assert running.size_vram == 0
    client.generate(model=NAME, prompt="Hi", options={"num_predict": 1}, keep_alive=0)
    deadline = time.monotonic() + 20
    while client.ps().models and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.ps().models == []


def test_a_request_without_keep_alive_gets_ollamas_default(client: ollama.Client) -> None:
    client.generate(model=NAME, prompt="Hi", options={"num_predict": 1}, keep_alive=-1)
    [forever] = client.ps().models
    assert forever.expires_at is not None
    assert forever.expires_at.timestamp() > time.time() + 365 * 86400
    client.generate(model=NAME, prompt="Hi", options={"num_predict": 1})  # no keep_alive
    [reset] = client.ps().models
    assert reset.expires_at is not None
    assert reset.expires_at.timestamp() == pytest.approx(time.time() + 300, abs=15)


def test_num_ctx_loads_the_model_with_that_context(client: ollama.Client) -> None:
    client.generate(model=NAME, prompt="Hi", options={"num_predict": 1, "num_ctx": 1024})
    [running] = client.ps().models
    assert running.context_length == 1024
    # A prompt longer than 1024 tokens fits once a request asks for a larger context.
    long_prompt = "one two three four " * 400
    with pytest.raises(ollama.ResponseError) as caught:
        client.generate(model=NAME, prompt=long_prompt, options={"num_predict": 1}, raw=True)
    assert caught.value.status_code == 400
    reply = client.generate(
        model=NAME, prompt=long_prompt, options={"num_predict": 1, "num_ctx": 2048}, raw=True
    )
    assert reply.done and (reply.prompt_eval_count or 0) > 1024
    [reloaded] = client.ps().models
    assert reloaded.context_length == 2048


def shown_threads(client: ollama.Client) -> int:
    """num_thread from /api/show's parameters (Ollama's "name<padding> value" lines)."""
    lines = (client.show(NAME).parameters or "").splitlines()
    [value] = [line.split()[1] for line in lines if line.split()[0] == "num_thread"]
    return int(value)


def test_num_thread_sets_the_threads_the_model_computes_with(client: ollama.Client) -> None:
    configured = shown_threads(client)
    assert configured >= 1
    reply = client.generate(
        model=NAME, prompt="Hi", options={"num_predict": 4, "temperature": 0, "num_thread": 1}
    )
    assert reply.done and reply.eval_count == 4 and reply.response
    assert shown_threads(client) == 1
    # An empty prompt loads with it too: back to the configured count (the most allowed).
    client.generate(model=NAME, prompt="", options={"num_thread": configured + 8})
    assert shown_threads(client) == configured


def test_unknown_model_is_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="no-such-model", messages=ASK)
    assert caught.value.status_code == 404
    assert "model 'no-such-model' not found" in caught.value.error
