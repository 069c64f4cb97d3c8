"""Rate limits on the bridge: 429 with Retry-After in each dialect, x-ratelimit-* headers on
every counted response, tokens charged from the core's usage, and the core's own refusals."""

from __future__ import annotations

import asyncio
import json
import re

import grpc
from minerva.v1.ratelimit import RateLimit

from tests.bridge.conftest import HANG, FakeCore, MakeBridge, chunk, final

CHAT = {"model": "smollm2-135m-instruct-q4_1", "messages": [{"role": "user", "content": "Hi"}]}


async def test_the_request_over_the_limit_is_a_429_with_retry_after(
    make_bridge: MakeBridge,
) -> None:
    bridge = await make_bridge(rate_limit=RateLimit(requests_per_minute=2))
    seen = []
    for _ in range(2):
        response = await bridge.get("/v1/models")
        assert response.status == 200
        seen.append(response.headers["x-ratelimit-remaining-requests"])
        assert response.headers["x-ratelimit-limit-requests"] == "2"
    assert seen == ["1", "0"]
    refused = await bridge.get("/v1/models")
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "30"
    reset = refused.headers["x-ratelimit-reset-requests"]  # full again in a minute, less a blink
    assert reset == "1m0s" or re.fullmatch(r"59\.\d+s", reset), reset
    error = (await refused.json())["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert "2 requests per minute" in error["message"]


async def test_ollama_routes_refuse_in_ollamas_shape(make_bridge: MakeBridge) -> None:
    bridge = await make_bridge(rate_limit=RateLimit(requests_per_minute=1))
    assert (await bridge.get("/api/tags")).status == 200
    refused = await bridge.get("/api/tags")
    assert refused.status == 429 and "Retry-After" in refused.headers
    body = await refused.json()
    assert set(body) == {"error"} and "rate limit reached" in body["error"]


async def test_health_and_metrics_are_not_counted(make_bridge: MakeBridge) -> None:
    bridge = await make_bridge(rate_limit=RateLimit(requests_per_minute=1))
    for _ in range(3):
        health = await bridge.get("/health")
        assert health.status == 200 and "x-ratelimit-limit-requests" not in health.headers
        assert (await bridge.get("/metrics")).status == 200
    assert (await bridge.get("/v1/models")).status == 200


async def test_streams_carry_the_headers_and_tokens_are_charged_from_usage(
    make_bridge: MakeBridge, core: FakeCore
) -> None:
    core.inference.script = [chunk("Hi", 1), final(prompt=7, completion=5)]
    bridge = await make_bridge(rate_limit=RateLimit(tokens_per_minute=13))
    response = await bridge.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status == 200
    assert response.headers["x-ratelimit-limit-tokens"] == "13"
    assert response.headers["x-ratelimit-remaining-tokens"] == "13"
    await response.text()
    second = await bridge.post("/v1/chat/completions", json=CHAT)  # 12 used: 1 left
    assert second.status == 200 and second.headers["x-ratelimit-remaining-tokens"] == "1"
    refused = await bridge.post("/v1/chat/completions", json=CHAT)
    assert refused.status == 429
    assert "tokens per minute" in (await refused.json())["error"]["message"]
    assert len(core.inference.requests) == 2  # the refused one never reached the core


async def test_embeddings_charge_their_input_tokens(make_bridge: MakeBridge) -> None:
    bridge = await make_bridge(rate_limit=RateLimit(tokens_per_minute=3))
    body = {"model": "smollm2-135m-instruct-q4_1", "input": "a fairly long input"}
    assert (await bridge.post("/v1/embeddings", json=body)).status == 200
    assert (await bridge.post("/v1/embeddings", json=body)).status == 429


async def test_each_key_has_its_own_bucket_and_its_own_limit(make_bridge: MakeBridge) -> None:
    bridge = await make_bridge(
        api_keys=("alice", "bob", "carol"),
        rate_limit=RateLimit(requests_per_minute=1),
        key_rate_limits=(("carol", RateLimit(requests_per_minute=3)),),
    )

    async def status(key: str) -> int:
        return (await bridge.get("/v1/models", headers={"Authorization": f"Bearer {key}"})).status

    assert [await status("alice"), await status("alice")] == [200, 429]
    assert await status("bob") == 200
    assert [await status("carol") for _ in range(4)] == [200, 200, 200, 429]
    # A wrong key is refused by auth before it can use anyone's bucket.
    assert await status("mallory") == 401


async def test_the_cores_rate_limit_facts_become_headers(
    make_bridge: MakeBridge, core: FakeCore
) -> None:
    trailing = grpc.aio.Metadata(
        ("retry-after", "7"), ("x-ratelimit-limit-requests", "5"), ("minerva-param", "model_id")
    )
    error = grpc.aio.AioRpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.aio.Metadata(),
        trailing,
        details="rate limit reached: 5 requests per minute; retry in 7s",
    )
    core.inference.script = [error]
    bridge = await make_bridge()
    refused = await bridge.post("/v1/chat/completions", json=CHAT)
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "7"
    assert refused.headers["x-ratelimit-limit-requests"] == "5"
    assert json.loads(await refused.text())["error"]["code"] == "rate_limit_exceeded"


async def test_a_stream_cut_short_is_charged_what_it_generated(
    make_bridge: MakeBridge, core: FakeCore
) -> None:
    core.inference.script = [chunk("a", 1), chunk("b", 2), HANG]
    bridge = await make_bridge(rate_limit=RateLimit(tokens_per_minute=2))
    response = await bridge.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status == 200
    await response.content.readuntil(b'"b"')  # both tokens reached the client
    response.close()
    await asyncio.wait_for(core.inference.calls[0].cancelled.wait(), 5)
    for _ in range(100):  # the handler's cleanup charges the 2 tokens
        refused = await bridge.post("/v1/chat/completions", json=CHAT)
        if refused.status == 429:
            break
        await asyncio.sleep(0.02)
    assert refused.status == 429
    assert "tokens per minute" in (await refused.json())["error"]["message"]


async def test_open_routes_are_not_counted(make_bridge: MakeBridge) -> None:
    bridge = await make_bridge(api_keys=("alice",), rate_limit=RateLimit(requests_per_minute=1))
    for index in range(5):  # made-up keys on an open route get no bucket of their own
        response = await bridge.get("/openapi.json", headers={"Authorization": f"Bearer x{index}"})
        assert response.status == 200 and "x-ratelimit-limit-requests" not in response.headers
    alice = {"Authorization": "Bearer alice"}
    assert (await bridge.get("/v1/models", headers=alice)).status == 200
    assert (await bridge.get("/v1/models", headers=alice)).status == 429
