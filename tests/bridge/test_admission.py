"""Early refusal: generation requests beyond a model's slots + queue_size in flight are a 429
with Retry-After from the bridge itself, without a call to the core; places free as calls end."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiohttp.test_utils import TestClient

from rest_bridge import admission
from rest_bridge.app_keys import ADMISSION
from tests.bridge.conftest import (
    CORE_ADDRESS,
    HANG,
    MODEL_ID,
    FakeCore,
    MakeBridge,
    chunk,
    sample_model,
)

WAIT_S = 5.0
PLACE = (CORE_ADDRESS, MODEL_ID)  # admission counts per core and model
CHAT = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "stream": True}


async def _bridge_for_two(make_bridge: MakeBridge, core: FakeCore) -> TestClient:
    """A bridge that knows the model takes 1 running + 1 waiting request."""
    model = sample_model()
    model.slots, model.queue_size = 1, 1
    core.models.models = [model]
    core.inference.script = [chunk("a", 1), HANG]
    bridge = await make_bridge()
    await until(lambda: bridge.app[ADMISSION].capacity.get(PLACE) == 2)  # the first refresh
    return bridge


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(int(WAIT_S / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def test_beyond_capacity_is_refused_without_calling_the_core(
    make_bridge: MakeBridge, core: FakeCore
) -> None:
    bridge = await _bridge_for_two(make_bridge, core)
    first = await bridge.post("/v1/chat/completions", json=CHAT)
    completion = {"model": MODEL_ID, "prompt": "Hi", "stream": True}
    second = await bridge.post("/v1/completions", json=completion)
    assert (first.status, second.status) == (200, 200)
    refused = await bridge.post("/v1/chat/completions", json=CHAT)
    assert refused.status == 429 and refused.headers["Retry-After"] == "1"
    error = (await refused.json())["error"]
    assert "is busy: 2 requests in flight" in error["message"]
    assert error["code"] == "rate_limit_exceeded"
    ollama = await bridge.post("/api/chat", json={**CHAT, "stream": False})
    assert ollama.status == 429 and "is busy" in (await ollama.json())["error"]
    assert len(core.inference.calls) == 2
    first.close()  # a client leaving frees its place
    await asyncio.wait_for(core.inference.calls[0].cancelled.wait(), WAIT_S)
    await until(lambda: bridge.app[ADMISSION].in_flight[PLACE] == 1)
    third = await bridge.post("/v1/chat/completions", json=CHAT)
    assert third.status == 200 and len(core.inference.calls) == 3
    second.close()
    third.close()


async def test_an_unsized_model_is_not_gated(make_bridge: MakeBridge, core: FakeCore) -> None:
    model = sample_model()
    model.slots = 0  # a core that does not say
    core.models.models = [model]
    bridge = await make_bridge()
    for _ in range(3):
        response = await bridge.post("/v1/chat/completions", json={**CHAT, "stream": False})
        assert response.status == 200
    assert bridge.app[ADMISSION].capacity == {}


async def test_a_refresh_that_breaks_does_not_stop_the_next(
    make_bridge: MakeBridge, core: FakeCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admission, "REFRESH_S", 0.01)
    model = sample_model()
    model.slots, model.queue_size = 1, 1
    core.models.models = [model]
    core.models.error = ValueError("a reply the bridge cannot read")
    bridge = await make_bridge()
    await asyncio.sleep(0.05)  # several refreshes fail
    assert bridge.app[ADMISSION].capacity == {}
    core.models.error = None
    await until(lambda: bridge.app[ADMISSION].capacity.get(PLACE) == 2)
