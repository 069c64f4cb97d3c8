"""llama-server's utility endpoints, the compact model list and /metrics through both processes."""

from __future__ import annotations

import json
import urllib.request

import openai
import pytest

from tests.e2e.conftest import MODEL, Stack

pytestmark = pytest.mark.e2e


def text_of(stack: Stack, path: str) -> tuple[str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{stack.bridge.port}{path}")
    request.add_header("Authorization", f"Bearer {stack.api_key}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers["Content-Type"], response.read().decode()


def test_tokenize_detokenize_round_trip(stack: Stack) -> None:
    body = json.dumps({"content": "Hello world", "with_pieces": True}).encode()
    tokenized = stack.http("POST", "/tokenize", body)
    assert tokenized.status == 200
    pieces = tokenized.json["tokens"]
    assert "".join(p["piece"] for p in pieces) == "Hello world"
    ids = [p["id"] for p in pieces]
    plain = stack.http("POST", "/tokenize", json.dumps({"content": "Hello world"}).encode())
    assert plain.json == {"tokens": ids}
    back = stack.http("POST", "/detokenize", json.dumps({"tokens": ids, "model": MODEL}).encode())
    assert back.json == {"content": "Hello world"}


def test_apply_template_is_the_prompt_chat_uses(stack: Stack, client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Say yes."}]
    shown = stack.http("POST", "/apply-template", json.dumps({"messages": messages}).encode())
    prompt = shown.json["prompt"]
    assert prompt.endswith("<|im_start|>user\nSay yes.<|im_end|>\n<|im_start|>assistant\n")
    counted = stack.http(
        "POST", "/tokenize", json.dumps({"content": prompt, "parse_special": True}).encode()
    )
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1)  # type: ignore[arg-type]
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == len(counted.json["tokens"])


def test_compact_model_list(stack: Stack) -> None:
    kind, page = text_of(stack, "/v1/models?format=compact")
    assert kind.startswith("text/plain")
    header, line = page.splitlines()
    assert header == "MODEL|QUANT|SIZE_MB|TENSORS|LAYERS|VOCAB"
    assert line.startswith(f"{MODEL}|Q4_1|") and line.endswith("|272|30|49152")


def _gaps_seen(stack: Stack) -> float:
    """The inter-token latency histogram's count for the model (0 before any)."""
    prefix = f'minerva_inter_token_latency_seconds_count{{model="{MODEL}"}} '
    found = [line for line in text_of(stack, "/metrics")[1].splitlines() if line.startswith(prefix)]
    return float(found[0].split()[-1]) if found else 0.0


def test_metrics_show_traffic_and_the_cores_model(stack: Stack, client: openai.OpenAI) -> None:
    gaps_before = _gaps_seen(stack)
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert reply.usage is not None
    # One gap between each two of the answer's tokens, as the bridge received them.
    assert _gaps_seen(stack) - gaps_before == reply.usage.completion_tokens - 1
    kind, page = text_of(stack, "/metrics")
    assert kind.startswith("text/plain")
    lines = page.splitlines()
    assert any(
        line.startswith(
            'minerva_bridge_requests_total{endpoint="/v1/chat/completions",status="200"}'
        )
        for line in lines
    )
    # Labelled with the core's address as the bridge's --core names it.
    labels = f'core="127.0.0.1:{stack.core.port}",model="{MODEL}"'
    assert f'minerva_core_up{{core="127.0.0.1:{stack.core.port}"}} 1.0' in lines
    assert f"minerva_core_model_loaded{{{labels}}} 1.0" in lines
    assert any(line.startswith(f"minerva_core_slots{{{labels}}}") for line in lines)
    count = f'minerva_time_to_first_token_seconds_count{{model="{MODEL}"}}'
    assert any(line.startswith(count) and float(line.split()[-1]) >= 1 for line in lines)
