"""A request's context_size (Ollama's num_ctx) through the real core: the model loads with it, a
prompt longer than the configured context then fits, another size reloads the model once the
request in flight has finished, and GetModel shows the size in effect."""

from __future__ import annotations

import asyncio
import logging
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
from tests.core.test_validation import expect_error, param_of

pytestmark = pytest.mark.asyncio(loop_scope="session")
CONFIGURED = 256
LONG = pb.TokenIds(ids=list(range(100, 400)))  # 300 tokens: more than the configured context


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def own(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    """A core whose models get a 256-token context unless a request asks for another."""
    models_dir = make_models_dir(tmp_path_factory.mktemp("ctx"), DEFAULT_MODEL_PATH)
    core = await start(core_settings(models_dir, default_context_size=CONFIGURED))
    client = Client(core)
    yield client
    await client.channel.close()
    await core.stop(0)


def generate(ids: pb.TokenIds, max_tokens: int, context_size: int | None) -> pb.GenerateRequest:
    request = pb.GenerateRequest(
        model_id=DEFAULT_MODEL_ID,
        token_ids=ids,
        sampling=pb.SamplingParams(temperature=0.0, max_tokens=max_tokens),
    )
    if context_size is not None:
        request.context_size = context_size
    return request


async def model(client: Client) -> models_pb2.Model:
    reply = await client.models.GetModel(models_pb2.GetModelRequest(model_id=DEFAULT_MODEL_ID))
    return reply.model


async def test_a_context_size_loads_with_it_and_another_reloads_after_the_stream(
    own: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="core.manager")
    too_long = await expect_error(own.inference.Generate(generate(LONG, 4, None)))
    assert too_long.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (await model(own)).context_size == CONFIGURED
    # A stream in flight on the 256-token copy, then a request that needs 512 tokens.
    short = pb.TokenIds(ids=list(range(100, 110)))
    running = own.inference.Generate(generate(short, 32, None))
    first = await running.read()
    assert first.WhichOneof("event") == "chunk"

    async def finish_running() -> tuple[pb.GenerationFinal, float]:
        while True:  # read() as above: gRPC forbids mixing it with iteration
            message = await running.read()
            assert message is not grpc.aio.EOF, "no final message"
            if message.WhichOneof("event") == "final":
                return message.final, time.monotonic()

    async def long_prompt() -> tuple[pb.GenerationFinal, float]:
        call = own.inference.Generate(generate(LONG, 4, 512))
        started = None
        async for message in call:
            started = started or time.monotonic()
            if message.WhichOneof("event") == "final":
                assert started is not None
                return message.final, started
        raise AssertionError("no final message")

    (old, old_done), (new, new_started) = await asyncio.gather(finish_running(), long_prompt())
    assert old.finish_reason != pb.FINISH_REASON_CANCELLED, "the old copy's stream was cut"
    assert old_done <= new_started, "the model reloaded while its stream was running"
    assert "reloading with a context of 512 tokens once its 1 request(s) finish" in caplog.text
    assert new.usage.prompt_tokens == 300 and new.usage.completion_tokens >= 1
    reloaded = await model(own)
    assert reloaded.load_state == models_pb2.LOAD_STATE_LOADED
    assert (reloaded.context_size, reloaded.slots, reloaded.kv_cache_tokens) == (512, 8, 2048)
    # Without a size the model is served as loaded: the long prompt still fits.
    _, final = await collect(own.inference.Generate(generate(LONG, 2, None)))
    assert final.usage.prompt_tokens == 300
    assert (await model(own)).context_size == 512


async def test_load_model_and_embed_take_a_context_size(own: Client) -> None:
    ready = None
    async for event in own.models.LoadModel(
        models_pb2.LoadModelRequest(model_id=DEFAULT_MODEL_ID, context_size=384)
    ):
        ready = event
    assert ready is not None and ready.stage == models_pb2.LOAD_STAGE_READY
    assert ready.model.context_size == 384
    text = " ".join(["word"] * 450)
    embed = pb.EmbedRequest(
        model_id=DEFAULT_MODEL_ID, inputs=[pb.EmbedInput(text=text)], context_size=1024
    )
    reply = await own.inference.Embed(embed)
    assert reply.usage.prompt_tokens > 384 and len(reply.embeddings[0].values) == 576
    assert (await model(own)).context_size == 1024


async def test_a_context_size_of_zero_is_invalid(own: Client) -> None:
    error = await expect_error(own.inference.Generate(generate(LONG, 1, 0)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await param_of(error) == "context_size"
