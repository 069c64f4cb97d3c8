"""Rate limits on the core: RESOURCE_EXHAUSTED with retry-after and x-ratelimit-* trailing
metadata, per API key (or per address without keys), tokens charged from the usage reported."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from minerva.v1 import inference_pb2, inference_pb2_grpc, models_pb2, models_pb2_grpc
from minerva.v1.ratelimit import RateLimit

from core.server import CoreServer, start
from tests.conftest import DEFAULT_MODEL_ID, DEFAULT_MODEL_PATH
from tests.core.conftest import core_settings, make_models_dir

pytestmark = pytest.mark.asyncio(loop_scope="session")


@dataclass
class Limited:
    core: CoreServer
    channel: grpc.aio.Channel

    def models(self) -> models_pb2_grpc.ModelServiceStub:
        return models_pb2_grpc.ModelServiceStub(self.channel)

    def inference(self) -> inference_pb2_grpc.InferenceServiceStub:
        return inference_pb2_grpc.InferenceServiceStub(self.channel)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def keyed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Limited]:
    """Keys `plain` (2 requests a minute, the default) and `metered` (50 tokens a minute)."""
    models_dir = make_models_dir(tmp_path_factory.mktemp("models"), DEFAULT_MODEL_PATH)
    settings = core_settings(
        models_dir,
        api_keys=("plain", "metered", "bob", "tiny"),
        rate_limit_rpm=2,
        key_rate_limits=(("metered", RateLimit(None, 50)), ("tiny", RateLimit(None, 3))),
    )
    core = await start(settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
        yield Limited(core, channel)
    await core.stop(0)


def _as(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def _tokenize(text: str = "hi") -> inference_pb2.TokenizeRequest:
    return inference_pb2.TokenizeRequest(model_id=DEFAULT_MODEL_ID, text=text)


async def test_the_call_over_the_limit_is_resource_exhausted_with_the_facts(keyed: Limited) -> None:
    stub = keyed.inference()
    left = []
    for _ in range(2):
        call = stub.Tokenize(_tokenize(), metadata=_as("plain"))
        await call
        left.append(dict(await call.trailing_metadata())["x-ratelimit-remaining-requests"])
    assert left == ["1", "0"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Tokenize(_tokenize(), metadata=_as("plain"))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "2 requests per minute" in (caught.value.details() or "")
    facts = dict(caught.value.trailing_metadata() or ())
    assert facts["retry-after"] == "30"
    assert facts["x-ratelimit-limit-requests"] == "2"
    assert re.fullmatch(r"1m0s|59\.\d+s", facts["x-ratelimit-reset-requests"])


async def test_health_and_the_model_service_are_never_counted(keyed: Limited) -> None:
    health = health_pb2_grpc.HealthStub(keyed.channel)
    for _ in range(5):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        listed = await keyed.models().ListModels(
            models_pb2.ListModelsRequest(), metadata=_as("bob")
        )
        assert DEFAULT_MODEL_ID in {m.id for m in listed.models}
    assert (await keyed.inference().Tokenize(_tokenize(), metadata=_as("bob"))).token_ids


async def test_tokens_are_charged_from_the_usage_a_generation_reports(keyed: Limited) -> None:
    prompt = "Count slowly from one to forty: one, two, three, four, five, six, seven, eight"
    request = inference_pb2.GenerateRequest(
        model_id=DEFAULT_MODEL_ID,
        text=prompt,
        sampling=inference_pb2.SamplingParams(max_tokens=40, temperature=0),
    )
    stub = keyed.inference()
    call = stub.Generate(request, metadata=_as("metered"))
    used = next(m.final.usage for m in [m async for m in call] if m.HasField("final"))
    assert used.prompt_tokens + used.completion_tokens > 50  # more than a minute's worth
    assert dict(await call.trailing_metadata())["x-ratelimit-limit-tokens"] == "50"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Tokenize(
            inference_pb2.TokenizeRequest(model_id=DEFAULT_MODEL_ID, text="hi"),
            metadata=_as("metered"),
        )
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "50 tokens per minute" in (caught.value.details() or "")
    assert int(dict(caught.value.trailing_metadata() or ())["retry-after"]) >= 1


async def test_without_keys_each_address_is_a_caller(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    models_dir = make_models_dir(tmp_path_factory.mktemp("open"), DEFAULT_MODEL_PATH)
    core = await start(core_settings(models_dir, rate_limit_rpm=1))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{core.port}") as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            await stub.Tokenize(_tokenize())
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Tokenize(_tokenize())
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await core.stop(0)


async def test_a_call_cut_short_is_charged_the_tokens_it_generated(keyed: Limited) -> None:
    request = inference_pb2.GenerateRequest(
        model_id=DEFAULT_MODEL_ID,
        text="1, 2, 3, 4, 5,",
        sampling=inference_pb2.SamplingParams(max_tokens=64, temperature=0),
    )
    stub = keyed.inference()
    call = stub.Generate(request, metadata=_as("tiny"))
    tokens = 0
    async for message in call:
        tokens += len(message.chunk.token_ids)
        if tokens >= 3:
            break
    call.cancel()  # no final: only the chunks say what was used
    for _ in range(100):
        try:
            await stub.Tokenize(_tokenize(), metadata=_as("tiny"))
        except grpc.aio.AioRpcError as refused:
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "3 tokens per minute" in (refused.details() or "")
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the cancelled call was never charged")
