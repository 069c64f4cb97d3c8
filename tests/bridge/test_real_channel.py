"""The bridge's own channel against a real grpc.aio server with fake servicers (no model)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from minerva.v1 import inference_pb2, inference_pb2_grpc

from rest_bridge.app import create_app
from rest_bridge.app_keys import ROUTER
from rest_bridge.errors import CORE_UNAVAILABLE
from rest_bridge.settings import Settings
from tests.bridge.conftest import MODEL_ID, chunk, final, sse_events

CHAT = "/v1/chat/completions"
WAIT_S = 10.0


class Inference(inference_pb2_grpc.InferenceServiceServicer):
    """Chat answers by the user's content: "fail" aborts, "forever" streams until cancelled."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, Any]] = []
        self.cancelled = asyncio.Event()

    async def Chat(self, request: Any, context: Any) -> AsyncIterator[Any]:
        self.metadata.append(dict(context.invocation_metadata()))
        content = request.messages[-1].content
        if content == "fail":
            context.set_trailing_metadata((("minerva-param", "sampling.temperature"),))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "temperature is out of range")
        try:
            yield inference_pb2.ChatResponse(chunk=chunk("tick", 1))
            while content == "forever":
                await asyncio.sleep(0.01)
                yield inference_pb2.ChatResponse(chunk=chunk(" tick", 1))
            yield inference_pb2.ChatResponse(final=final())
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


class Core:
    """A grpc.aio server on a fixed port that can be stopped and started again."""

    def __init__(self) -> None:
        self.inference = Inference()
        self.port = 0
        self.server: grpc.aio.Server | None = None

    async def start(self) -> None:
        self.server = grpc.aio.server()
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(self.inference, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)
            self.server = None


@pytest.fixture
async def core() -> AsyncIterator[Core]:
    server = Core()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def bridge(aiohttp_client: Any, core: Core) -> TestClient:
    settings = Settings(
        core_address=f"127.0.0.1:{core.port}", api_keys=("client-key",), core_api_key="core-key"
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    return client


def chat(content: str, stream: bool = False) -> dict[str, Any]:
    return {"model": MODEL_ID, "messages": [{"role": "user", "content": content}], "stream": stream}


AUTH = {"Authorization": "Bearer client-key"}


async def test_stream_through_a_real_channel_sends_the_core_key(
    bridge: TestClient, core: Core
) -> None:
    response = await bridge.post(CHAT, json=chat("hello", stream=True), headers=AUTH)
    assert response.status == 200
    events = sse_events(await response.text())
    assert [e["choices"][0]["delta"] for e in events[:-1]] == [
        {"role": "assistant", "content": ""},
        {"content": "tick"},
        {},
    ]
    assert core.inference.metadata[0]["authorization"] == "Bearer core-key"


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("client-req-7", True), (None, False), ("has spaces", False), ("x" * 129, False)],
)
async def test_request_ids_are_echoed_and_reach_the_core(
    bridge: TestClient, core: Core, sent: str | None, kept: bool
) -> None:
    headers = {**AUTH, **({"x-request-id": sent} if sent is not None else {})}
    for stream in (True, False):
        response = await bridge.post(CHAT, json=chat("hello", stream=stream), headers=headers)
        assert response.status == 200
        rid = response.headers["x-request-id"]
        assert rid == sent if kept else re.fullmatch(r"[0-9a-f]{32}", rid)
        assert core.inference.metadata[-1]["x-request-id"] == rid
    # Errors and routes the bridge refuses itself carry one too.
    failed = await bridge.post(CHAT, json=chat("fail"), headers=headers)
    assert failed.status == 400 and failed.headers["x-request-id"]
    missing = await bridge.get("/no/such/route", headers=headers)
    assert missing.status == 404 and missing.headers["x-request-id"]
    unauthorized = await bridge.get("/v1/models")
    assert unauthorized.status == 401 and unauthorized.headers["x-request-id"]


async def test_admin_callers_reach_the_core_with_the_admin_key(
    aiohttp_client: Any, core: Core
) -> None:
    settings = Settings(
        core_address=f"127.0.0.1:{core.port}",
        api_keys=("client-key",),
        core_api_key="core-key",
        admin_keys=("admin-key",),
        core_admin_key="core-admin-key",
    )
    bridge: TestClient = await aiohttp_client(create_app(settings))
    for key, sent in (("admin-key", "core-admin-key"), ("client-key", "core-key")):
        response = await bridge.post(
            CHAT, json=chat("hello"), headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status == 200
        assert core.inference.metadata[-1]["authorization"] == f"Bearer {sent}"
    refused = await bridge.post(CHAT, json=chat("hello"), headers={"Authorization": "Bearer x"})
    assert refused.status == 401


async def test_trailing_metadata_param_survives_the_wire(bridge: TestClient) -> None:
    response = await bridge.post(CHAT, json=chat("fail", stream=True), headers=AUTH)
    assert response.status == 400
    error = (await response.json())["error"]
    assert (error["param"], error["message"]) == ("temperature", "temperature is out of range")


async def test_disconnect_cancels_the_servers_generator(bridge: TestClient, core: Core) -> None:
    response = await bridge.post(CHAT, json=chat("forever", stream=True), headers=AUTH)
    await response.content.readuntil(b"\n\n")
    await response.content.readuntil(b"\n\n")
    response.close()
    await asyncio.wait_for(core.inference.cancelled.wait(), WAIT_S)


async def test_core_down_is_503_and_the_bridge_recovers(bridge: TestClient, core: Core) -> None:
    assert (await bridge.get("/health")).status == 200
    await core.stop()
    down = await bridge.post(CHAT, json=chat("hello"), headers=AUTH)
    assert down.status == 503
    message = (await down.json())["error"]["message"]
    assert message == CORE_UNAVAILABLE
    assert (await bridge.get("/health")).status == 503
    await core.start()
    await _wait_until_healthy(bridge)
    again = await bridge.post(CHAT, json=chat("hello"), headers=AUTH)
    assert again.status == 200
    assert (await again.json())["choices"][0]["message"]["content"] == "tick"


async def _wait_until_healthy(bridge: TestClient, attempts: int = 100) -> None:
    for _ in range(attempts):
        if (await bridge.get("/health")).status == 200:
            return
        await asyncio.sleep(0.1)
    pytest.fail("the bridge did not reconnect to the restarted core")


async def test_health_checking_keeps_calls_off_a_not_serving_core(aiohttp_client: Any) -> None:
    """The channel's client-side health checking (healthCheckConfig) takes a NOT_SERVING core
    out of rotation: calls fail UNAVAILABLE at once, and succeed again once it serves."""
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        client = await aiohttp_client(create_app(Settings(core_address=f"127.0.0.1:{port}")))
        response = await client.get("/health")
        assert response.status == 503
        assert await response.json() == {
            "status": "unavailable",
            "core": "UNAVAILABLE",
            "message": "core unavailable",
        }
        core = client.app[ROUTER].cores[0].client
        assert core.connectivity() == grpc.ChannelConnectivity.TRANSIENT_FAILURE
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        for _ in range(50):
            if (await client.get("/health")).status == 200:
                break
            await asyncio.sleep(0.1)
        assert await (await client.get("/health")).json() == {"status": "ok", "core": "SERVING"}
    finally:
        await server.stop(grace=None)


async def test_a_grpc_target_of_several_addresses_is_one_round_robin_channel(
    aiohttp_client: Any,
) -> None:
    """A scheme target stays one channel (the bridge sees one core) and gRPC's round_robin,
    from the bridge's service config, spreads the calls over every address it resolves to."""
    cores = [Core(), Core()]
    for server in cores:
        await server.start()
    try:
        target = f"ipv4:127.0.0.1:{cores[0].port},127.0.0.1:{cores[1].port}"
        client = await aiohttp_client(create_app(Settings(core_address=target)))
        assert [core.address for core in client.app[ROUTER].cores] == [target]
        body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(8):
            assert (await client.post(CHAT, json=body)).status == 200
        calls = [len(server.inference.metadata) for server in cores]
        assert sum(calls) == 8 and min(calls) >= 2, calls
    finally:
        for server in cores:
            await server.stop()
