"""A request's threads (Ollama's num_thread) through the real core: the loaded model computes
with that many CPU threads from then on, clamped to the configured count, and GetModel shows it;
below gRPC, the step loop switches between two decodes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import llama_cpp
import pytest
import pytest_asyncio
from minerva.v1 import inference_pb2 as pb
from minerva.v1 import models_pb2

from core.engine.llama_backend import LoadOptions, init_backend
from core.engine.llama_engine import LlamaEngine
from core.engine.sampling import Sampling
from core.engine.types import GenerationRequest, GenerationResult
from core.server import start
from tests.conftest import DEFAULT_MODEL_ID, DEFAULT_MODEL_PATH
from tests.core.conftest import Client, core_settings, make_models_dir
from tests.core.test_generation import collect
from tests.core.test_validation import expect_error, param_of

pytestmark = pytest.mark.asyncio(loop_scope="session")
CONFIGURED = 2


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def own(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    """A core of its own: the thread count a request sets stays for later requests."""
    models_dir = make_models_dir(tmp_path_factory.mktemp("threads"), DEFAULT_MODEL_PATH)
    core = await start(core_settings(models_dir, threads=CONFIGURED))
    client = Client(core)
    yield client
    await client.channel.close()
    await core.stop(0)


def generate(threads: int | None) -> pb.GenerateRequest:
    request = pb.GenerateRequest(
        model_id=DEFAULT_MODEL_ID,
        text="The capital of France is",
        sampling=pb.SamplingParams(temperature=0.0, max_tokens=8),
    )
    if threads is not None:
        request.threads = threads
    return request


async def model(client: Client) -> models_pb2.Model:
    reply = await client.models.GetModel(models_pb2.GetModelRequest(model_id=DEFAULT_MODEL_ID))
    return reply.model


async def test_threads_apply_to_the_loaded_model_and_stay_clamped_to_the_configured_count(
    own: Client,
) -> None:
    before = await model(own)
    assert before.load_state == models_pb2.LOAD_STATE_UNLOADED
    assert before.threads == CONFIGURED  # not loaded: the configured count

    chunks, final = await collect(own.inference.Generate(generate(1)))
    assert final.usage.completion_tokens == 8
    assert "".join(c.text for c in chunks).strip()
    assert (await model(own)).threads == 1

    # A request that says nothing keeps the count; generation still works with it.
    _, final = await collect(own.inference.Generate(generate(None)))
    assert final.usage.completion_tokens == 8
    assert (await model(own)).threads == 1

    # More than the operator configured is clamped to it.
    chat = pb.ChatRequest(
        model_id=DEFAULT_MODEL_ID,
        messages=[pb.ChatMessage(role="user", content="Say hello.")],
        sampling=pb.SamplingParams(temperature=0.0, max_tokens=4),
        threads=64,
    )
    _, final = await collect(own.inference.Chat(chat))
    assert final.usage.completion_tokens > 0
    assert (await model(own)).threads == CONFIGURED
    listed = await own.models.ListModels(models_pb2.ListModelsRequest())
    assert [m.threads for m in listed.models if m.id == DEFAULT_MODEL_ID] == [CONFIGURED]


async def test_embed_and_load_set_threads_too(own: Client) -> None:
    embed = pb.EmbedRequest(
        model_id=DEFAULT_MODEL_ID, inputs=[pb.EmbedInput(text="hello")], threads=1
    )
    reply = await own.inference.Embed(embed)
    assert len(reply.embeddings) == 1 and len(reply.embeddings[0].values) > 0
    assert (await model(own)).threads == 1

    load = models_pb2.LoadModelRequest(model_id=DEFAULT_MODEL_ID, threads=CONFIGURED)
    events = [e async for e in own.models.LoadModel(load)]
    assert events[-1].stage == models_pb2.LOAD_STAGE_READY
    assert events[-1].model.threads == CONFIGURED
    assert (await model(own)).threads == CONFIGURED


@pytest.mark.parametrize("rpc", ["generate", "chat", "embed", "load"])
async def test_zero_threads_is_invalid_argument_naming_threads(own: Client, rpc: str) -> None:
    if rpc == "embed":
        request = pb.EmbedRequest(
            model_id=DEFAULT_MODEL_ID, inputs=[pb.EmbedInput(text="hi")], threads=0
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await own.inference.Embed(request)
        error = err.value
    elif rpc == "load":
        load = models_pb2.LoadModelRequest(model_id=DEFAULT_MODEL_ID, threads=0)
        error = await expect_error(own.models.LoadModel(load))
    elif rpc == "chat":
        chat = pb.ChatRequest(
            model_id=DEFAULT_MODEL_ID,
            messages=[pb.ChatMessage(role="user", content="hi")],
            threads=0,
        )
        error = await expect_error(own.inference.Chat(chat))
    else:
        error = await expect_error(own.inference.Generate(generate(0)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await param_of(error) == "threads"


async def test_the_step_loop_applies_a_new_count_before_its_next_decode() -> None:
    init_backend()
    opts = LoadOptions(path=DEFAULT_MODEL_PATH, context_size=256, threads=2, n_gpu_layers=0)
    engine = await asyncio.to_thread(LlamaEngine.load, "threads", opts, 4)
    try:
        steps = engine._steps
        engine.set_threads(1)
        # Idle, the step thread has not decoded since: the context still computes with 2.
        assert engine.threads == 1
        assert steps.threads_applied == 2
        assert steps._ctx.threads == 2
        tokens = await engine.tokenizer.tokenize("Hello", True, False)
        request = GenerationRequest(
            tuple(tokens), Sampling(temperature=0.0), 4, time.perf_counter()
        )
        events = [e async for e in engine.generate(request)]
        result = events[-1]
        assert isinstance(result, GenerationResult) and result.completion_tokens == 4
        assert steps.threads_applied == 1
        assert steps._ctx.threads == 1
        # The embedding context, created with the configured count, switches before its decode.
        [vector] = await engine.embed([tokens], True)
        assert len(vector) > 0
        assert llama_cpp.llama_n_threads(engine._embedder._ctx) == 1
        engine.set_threads(0)  # the engine never goes below one, nor above the configured count
        assert engine.threads == 1
        engine.set_threads(16)
        assert engine.threads == 2
    finally:
        await engine.close()
