"""Per-request keep-alive through the real core: 0 unloads after the request, a TTL expires, < 0
keeps the model; ListModels shows when it will expire."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from minerva.v1 import inference_pb2 as pb
from minerva.v1 import models_pb2

from core.server import start
from tests.conftest import DEFAULT_MODEL_ID, DEFAULT_MODEL_PATH
from tests.core.conftest import Client, core_settings, make_models_dir
from tests.core.test_generation import collect
from tests.core.test_validation import expect_error

pytestmark = pytest.mark.asyncio(loop_scope="session")
WAIT_S = 10.0


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def own(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    """A core that never unloads idle models by itself (idle TTL 0)."""
    models_dir = make_models_dir(tmp_path_factory.mktemp("keep"), DEFAULT_MODEL_PATH)
    core = await start(core_settings(models_dir, idle_ttl_s=0))
    client = Client(core)
    yield client
    await client.channel.close()
    await core.stop(0)


def ask(keep_alive: float | None) -> pb.ChatRequest:
    request = pb.ChatRequest(
        model_id=DEFAULT_MODEL_ID,
        messages=[pb.ChatMessage(role="user", content="Hi")],
        sampling=pb.SamplingParams(max_tokens=2, temperature=0.0),
    )
    if keep_alive is not None:
        request.keep_alive_seconds = keep_alive
    return request


async def model(client: Client) -> models_pb2.Model:
    reply = await client.models.GetModel(models_pb2.GetModelRequest(model_id=DEFAULT_MODEL_ID))
    return reply.model


async def unloaded_within(client: Client, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (await model(client)).load_state == models_pb2.LOAD_STATE_UNLOADED:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_keep_alive_zero_unloads_after_the_request(own: Client) -> None:
    await collect(own.inference.Chat(ask(0)))
    assert await unloaded_within(own, WAIT_S)


async def test_a_keep_alive_expires_and_is_shown(own: Client) -> None:
    await collect(own.inference.Chat(ask(-1)))  # loaded for good
    await collect(own.inference.Chat(ask(None)))  # says nothing: the last setting holds
    loaded = await model(own)
    assert loaded.load_state == models_pb2.LOAD_STATE_LOADED
    assert loaded.expires_unix == 0 and loaded.memory_bytes > 50_000_000
    await collect(own.inference.Chat(ask(1.5)))
    expires = (await model(own)).expires_unix
    assert time.time() < expires <= time.time() + 1.6
    assert await unloaded_within(own, WAIT_S)


async def test_a_negative_keep_alive_keeps_the_model(own: Client) -> None:
    await collect(own.inference.Chat(ask(1.0)))
    await collect(own.inference.Chat(ask(-1)))
    await asyncio.sleep(1.5)
    kept = await model(own)
    assert kept.load_state == models_pb2.LOAD_STATE_LOADED and kept.expires_unix == 0


async def test_load_model_takes_a_keep_alive(own: Client) -> None:
    async for _ in own.models.LoadModel(
        models_pb2.LoadModelRequest(model_id=DEFAULT_MODEL_ID, keep_alive_seconds=0)
    ):
        pass
    assert await unloaded_within(own, WAIT_S)


async def test_a_keep_alive_that_is_no_number_is_invalid(own: Client) -> None:
    error = await expect_error(own.inference.Chat(ask(math.nan)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
