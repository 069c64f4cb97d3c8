"""Cross-cutting behaviour of the app: auth, body limit, error pages, client disconnects."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from rest_bridge.auth import bearer_token, key_matches
from tests.bridge.conftest import HANG, MODEL_ID, FakeCore, MakeBridge, chunk

CHAT = "/v1/chat/completions"
WAIT_S = 5.0


def chat_body(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], **fields}


def big_chat_body(content_bytes: int) -> io.BytesIO:
    """A large body as a stream (aiohttp warns about big raw bytes bodies)."""
    body = chat_body(messages=[{"role": "user", "content": "x" * content_bytes}])
    return io.BytesIO(json.dumps(body).encode())


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        ("Bearer wrong", 401),
        ("Bearer ", 401),
        ("Basic a2V5LW9uZQ==", 401),
        ("key-one", 401),
        ("Bearer key-one", 200),
        ("bearer key-two", 200),
        ("Bearer  key-two ", 200),
    ],
)
async def test_api_keys(make_bridge: MakeBridge, header: str | None, status: int) -> None:
    bridge = await make_bridge(api_keys=("key-one", "key-two"))
    headers = {"Authorization": header} if header is not None else {}
    response = await bridge.get("/v1/models", headers=headers)
    assert response.status == status
    if status == 401:
        error = (await response.json())["error"]
        assert error["code"] == "invalid_api_key"
        assert error["type"] == "invalid_request_error"


async def test_no_keys_means_no_auth(bridge: TestClient) -> None:
    response = await bridge.get("/v1/models", headers={"Authorization": "Bearer anything"})
    assert response.status == 200


async def test_auth_applies_to_unknown_routes_too(make_bridge: MakeBridge) -> None:
    bridge = await make_bridge(api_keys=("k",))
    assert (await bridge.get("/v1/nothing")).status == 401
    assert (await bridge.get("/v1/nothing", headers={"Authorization": "Bearer k"})).status == 404


async def test_keys_never_logged(make_bridge: MakeBridge, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bridge = await make_bridge(api_keys=("sekrit-key",), core_api_key="core-sekrit")
    await bridge.get("/v1/models", headers={"Authorization": "Bearer sekrit-key"})
    await bridge.get("/v1/models", headers={"Authorization": "Bearer wrong-sekrit"})
    await bridge.post(CHAT, json=chat_body(), headers={"Authorization": "Bearer sekrit-key"})
    assert caplog.records, "expected some log records (access log) to inspect"
    assert "sekrit" not in caplog.text


def test_key_matches_checks_every_key() -> None:
    assert key_matches("b", ["a", "b", "c"])
    assert not key_matches("d", ["a", "b", "c"])
    assert not key_matches("", ["a"])
    assert not key_matches("a", [])


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        ("", None),
        ("Bearer x", "x"),
        ("BEARER x", "x"),
        ("Token x", None),
        ("Bearer", None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


async def test_body_over_the_limit_is_413_envelope(make_bridge: MakeBridge, core: FakeCore) -> None:
    bridge = await make_bridge(max_body_mb=1)
    response = await bridge.post(CHAT, data=big_chat_body(1024 * 1024 + 10))
    assert response.status == 413
    error = (await response.json())["error"]
    assert error["code"] == "request_too_large"
    assert "1048576" in error["message"]
    assert core.inference.requests == []


async def test_body_under_the_limit_passes(make_bridge: MakeBridge) -> None:
    bridge = await make_bridge(max_body_mb=1)
    response = await bridge.post(CHAT, data=big_chat_body(1_000_000))
    assert response.status == 200


async def test_unknown_route_and_wrong_method_are_envelopes(bridge: TestClient) -> None:
    missing = await bridge.get("/v1/nope")
    assert missing.status == 404
    assert (await missing.json())["error"]["code"] == "not_found"
    wrong = await bridge.get(CHAT)
    assert wrong.status == 405
    assert (await wrong.json())["error"]["code"] == "method_not_allowed"


async def test_disconnect_mid_stream_cancels_the_core_call(
    bridge: TestClient, core: FakeCore
) -> None:
    core.inference.script = [chunk("a", 1), chunk("b", 2), HANG]
    response = await bridge.post(CHAT, json=chat_body(stream=True))
    assert response.status == 200
    first = await response.content.readuntil(b"\n\n")
    assert b'"role":"assistant"' in first
    call = core.inference.calls[0]
    assert not call.cancelled.is_set()
    response.close()
    await asyncio.wait_for(call.cancelled.wait(), WAIT_S)


async def test_disconnect_before_first_token_cancels_the_core_call(
    bridge: TestClient, core: FakeCore
) -> None:
    core.inference.script = [HANG]
    request = asyncio.create_task(bridge.post(CHAT, json=chat_body(stream=True)))
    await asyncio.wait_for(core.inference.called.wait(), WAIT_S)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    await asyncio.wait_for(core.inference.calls[0].cancelled.wait(), WAIT_S)


async def test_non_streaming_call_is_cancelled_on_disconnect(
    bridge: TestClient, core: FakeCore
) -> None:
    core.inference.script = [chunk("a", 1), HANG]
    request = asyncio.create_task(bridge.post(CHAT, json=chat_body()))
    await asyncio.wait_for(core.inference.called.wait(), WAIT_S)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    await asyncio.wait_for(core.inference.calls[0].cancelled.wait(), WAIT_S)
