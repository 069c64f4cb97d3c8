"""Model lifecycle through a real server: LRU eviction, single-flight loads, idle TTL, pinning, auth."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from minerva.v1 import inference_pb2 as pb
from minerva.v1 import models_pb2

from core.model_slot import LoadState
from core.server import start
from core.settings import ModelOptions
from tests.conftest import DEFAULT_MODEL_ID, DEFAULT_MODEL_PATH, EXTRA_MODEL_ID, EXTRA_MODEL_PATH
from tests.core.conftest import Client, core_settings, make_models_dir

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session")
async def two_models(tmp_path: Path) -> AsyncIterator[Client]:
    # Budget fits either model (about 139 and 264 MB with their caches) but not both.
    models_dir = make_models_dir(tmp_path / "models", DEFAULT_MODEL_PATH, EXTRA_MODEL_PATH)
    core = await start(core_settings(models_dir, memory_budget_mb=350))
    client = Client(core)
    yield client
    await client.channel.close()
    await core.stop(0)


def state(client: Client) -> dict[str, LoadState]:
    return {mid: client.core.manager.state(mid)[0] for mid in (DEFAULT_MODEL_ID, EXTRA_MODEL_ID)}


async def generate(client: Client, model_id: str, tokens: int = 2) -> pb.GenerationFinal:
    request = pb.GenerateRequest(
        model_id=model_id, text="Hello", sampling=pb.SamplingParams(max_tokens=tokens)
    )
    final = None
    async for message in client.inference.Generate(request):
        if message.WhichOneof("event") == "final":
            final = message.final
    assert final is not None
    return final


async def test_lru_eviction_under_the_memory_budget(two_models: Client) -> None:
    await generate(two_models, DEFAULT_MODEL_ID)
    assert state(two_models) == {
        DEFAULT_MODEL_ID: LoadState.LOADED,
        EXTRA_MODEL_ID: LoadState.UNLOADED,
    }
    final = await generate(two_models, EXTRA_MODEL_ID)
    assert final.usage.completion_tokens == 2
    assert state(two_models) == {
        DEFAULT_MODEL_ID: LoadState.UNLOADED,
        EXTRA_MODEL_ID: LoadState.LOADED,
    }
    listed = await two_models.models.ListModels(models_pb2.ListModelsRequest())
    states = {m.id: m.load_state for m in listed.models}
    assert states[EXTRA_MODEL_ID] == models_pb2.LOAD_STATE_LOADED
    assert states[DEFAULT_MODEL_ID] == models_pb2.LOAD_STATE_UNLOADED


async def test_concurrent_first_requests_load_once(
    two_models: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = two_models.core.manager._factory
    loads: list[str] = []
    original = type(factory).load

    async def counting(
        self: object, spec: object, header: object, progress: object, requested: object = None
    ) -> object:
        loads.append(spec.id)  # type: ignore[attr-defined]
        return await original(factory, spec, header, progress, requested)  # type: ignore[arg-type]

    monkeypatch.setattr(type(factory), "load", counting)
    finals = await asyncio.gather(*(generate(two_models, DEFAULT_MODEL_ID) for _ in range(3)))
    assert [f.usage.completion_tokens for f in finals] == [2, 2, 2]
    assert loads == [DEFAULT_MODEL_ID]


async def test_idle_models_are_reaped_but_pinned_ones_stay(tmp_path: Path) -> None:
    models_dir = make_models_dir(tmp_path / "models", DEFAULT_MODEL_PATH)
    pinned = ModelOptions(id="pinned-smol", path=DEFAULT_MODEL_PATH, pinned=True)
    settings = core_settings(
        models_dir, models=(pinned,), allowed_roots=(DEFAULT_MODEL_PATH.parent,), idle_ttl_s=0.05
    )
    core = await start(settings)
    client = Client(core)
    try:
        assert (
            core.manager.state("pinned-smol")[0] is LoadState.LOADED
        )  # pinned: loaded at start-up
        await generate(client, DEFAULT_MODEL_ID)
        # The server's own reaper task unloads it once idle past the TTL.
        for _ in range(100):
            if core.manager.state(DEFAULT_MODEL_ID)[0] is LoadState.UNLOADED:
                break
            await asyncio.sleep(0.02)
        assert core.manager.state(DEFAULT_MODEL_ID)[0] is LoadState.UNLOADED
        assert core.manager.state("pinned-smol")[0] is LoadState.LOADED
    finally:
        await client.channel.close()
        await core.stop(0)


async def test_api_keys_required_on_calls_but_not_health(tmp_path: Path) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    models_dir = make_models_dir(tmp_path / "models", DEFAULT_MODEL_PATH)
    core = await start(core_settings(models_dir, api_keys=("k-one", "k-two")))
    client = Client(core)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.models.ListModels(models_pb2.ListModelsRequest())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.models.ListModels(
                models_pb2.ListModelsRequest(), metadata=(("authorization", "Bearer nope"),)
            )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        stream = client.inference.Generate(pb.GenerateRequest(model_id=DEFAULT_MODEL_ID, text="Hi"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stream:
                pass
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = await client.models.ListModels(
            models_pb2.ListModelsRequest(), metadata=(("authorization", "Bearer k-two"),)
        )
        assert {m.id for m in ok.models} == {DEFAULT_MODEL_ID, "corrupt"}
        health = await health_pb2_grpc.HealthStub(client.channel).Check(
            health_pb2.HealthCheckRequest()
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await client.channel.close()
        await core.stop(0)


async def test_admin_keys_guard_model_administration(tmp_path: Path) -> None:
    models_dir = make_models_dir(tmp_path / "models", DEFAULT_MODEL_PATH)
    core = await start(core_settings(models_dir, api_keys=("client",), admin_keys=("admin",)))
    client = Client(core)
    as_client = (("authorization", "Bearer client"),)
    as_admin = (("authorization", "Bearer admin"),)

    async def status(call: object) -> grpc.StatusCode:
        try:
            if hasattr(call, "__aiter__"):
                async for _ in call:  # type: ignore[attr-defined]
                    pass
            else:
                await call  # type: ignore[misc]
        except grpc.aio.AioRpcError as err:
            assert err.code() != grpc.StatusCode.PERMISSION_DENIED or "admin key" in (
                err.details() or ""
            )
            return err.code()
        return grpc.StatusCode.OK

    def generate(keep_alive: float | None, metadata: tuple) -> object:
        request = pb.GenerateRequest(
            model_id=DEFAULT_MODEL_ID, text="Hi", sampling=pb.SamplingParams(max_tokens=1)
        )
        if keep_alive is not None:
            request.keep_alive_seconds = keep_alive
        return client.inference.Generate(request, metadata=metadata)

    load = models_pb2.LoadModelRequest(model_id=DEFAULT_MODEL_ID)
    unload = models_pb2.UnloadModelRequest(model_id=DEFAULT_MODEL_ID)
    denied = grpc.StatusCode.PERMISSION_DENIED
    try:
        assert await status(client.models.LoadModel(load, metadata=as_client)) == denied
        assert await status(client.models.UnloadModel(unload, metadata=as_client)) == denied
        assert await status(generate(0, as_client)) == denied  # Ollama's keep_alive 0
        assert await status(generate(None, as_client)) == grpc.StatusCode.OK
        assert await status(generate(300, as_client)) == grpc.StatusCode.OK
        listed = await client.models.ListModels(models_pb2.ListModelsRequest(), metadata=as_client)
        assert DEFAULT_MODEL_ID in {m.id for m in listed.models}
        # The admin key does everything a client key does, and administers.
        assert await status(generate(0, as_admin)) == grpc.StatusCode.OK
        assert await status(client.models.UnloadModel(unload, metadata=as_admin)) == (
            grpc.StatusCode.OK
        )
        assert await status(client.models.LoadModel(load, metadata=as_admin)) == (
            grpc.StatusCode.OK
        )
        no_key = client.models.LoadModel(load)
        assert await status(no_key) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await client.channel.close()
        await core.stop(0)


async def test_an_unimportable_safetensors_file_fails_without_evicting(tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    models_dir = make_models_dir(tmp_path / "models", DEFAULT_MODEL_PATH)
    save_file({"w": np.zeros((4, 8), dtype=np.float16)}, str(models_dir / "tiny.safetensors"))
    # A budget so small that any load would evict whatever is loaded.
    core = await start(core_settings(models_dir, memory_budget_mb=1))
    client = Client(core)
    try:
        await generate(client, DEFAULT_MODEL_ID)
        got = await client.models.GetModel(models_pb2.GetModelRequest(model_id="tiny"))
        assert got.model.metadata.format == models_pb2.MODEL_FORMAT_SAFETENSORS
        assert (got.model.metadata.parameter_count, got.model.metadata.quantization) == (32, "F16")
        assert not got.model.servable  # no config.json: no architecture to import
        call = client.inference.Generate(pb.GenerateRequest(model_id="tiny", text="Hi"))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in call:
                pass
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "config.json is missing" in (err.value.details() or "")
        assert core.manager.state(DEFAULT_MODEL_ID)[0] is LoadState.LOADED, (
            "evicted for a model it cannot serve"
        )
        assert (await generate(client, DEFAULT_MODEL_ID)).usage.completion_tokens == 2
    finally:
        await client.channel.close()
        await core.stop(0)


async def test_a_pinned_model_that_fails_does_not_stop_the_server(tmp_path: Path) -> None:
    models_dir = make_models_dir(tmp_path / "models", DEFAULT_MODEL_PATH)
    broken = ModelOptions(id="broken-pinned", path=models_dir / "corrupt.gguf", pinned=True)
    blank = ModelOptions(
        id="blank-template", path=DEFAULT_MODEL_PATH, chat_template="{% if false %}x{% endif %}"
    )
    settings = core_settings(
        models_dir, models=(broken, blank), allowed_roots=(models_dir, DEFAULT_MODEL_PATH.parent)
    )
    core = await start(settings)
    client = Client(core)
    try:
        assert core.manager.state("broken-pinned")[0] is LoadState.FAILED
        assert "magic" in core.manager.state("broken-pinned")[1].lower()
        assert (await generate(client, DEFAULT_MODEL_ID)).usage.completion_tokens == 2
        chat = client.inference.Chat(
            pb.ChatRequest(
                model_id="blank-template", messages=[pb.ChatMessage(role="user", content="Hi")]
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in chat:
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert dict(err.value.trailing_metadata() or ()).get("minerva-param") == "messages"
    finally:
        await client.channel.close()
        await core.stop(0)


async def test_gpu_layers_on_a_cpu_build_warn_and_still_serve(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from core.engine.llama_backend import gpu_offload_supported

    models_dir = make_models_dir(tmp_path / "models", DEFAULT_MODEL_PATH)
    gpu = ModelOptions(id="smol-gpu", path=DEFAULT_MODEL_PATH, n_gpu_layers=-1)
    core = await start(
        core_settings(models_dir, models=(gpu,), allowed_roots=(DEFAULT_MODEL_PATH.parent,))
    )
    client = Client(core)
    try:
        got = await client.models.GetModel(models_pb2.GetModelRequest(model_id="smol-gpu"))
        assert got.model.n_gpu_layers == -1
        assert (await generate(client, "smol-gpu")).usage.completion_tokens == 2
        warned = "no GPU offload" in caplog.text
        assert warned == (not gpu_offload_supported())
    finally:
        await client.channel.close()
        await core.stop(0)


async def test_server_limits_on_max_tokens_and_generation_time(tmp_path: Path) -> None:
    models_dir = make_models_dir(tmp_path / "models", DEFAULT_MODEL_PATH)
    core = await start(core_settings(models_dir, max_tokens_cap=100, max_generation_s=0.1))
    client = Client(core)

    async def final(max_tokens: int | None) -> pb.GenerationFinal:
        sampling = pb.SamplingParams(temperature=0.0)
        if max_tokens is not None:
            sampling.max_tokens = max_tokens
        request = pb.GenerateRequest(
            model_id=DEFAULT_MODEL_ID, text="Once upon a time", sampling=sampling
        )
        finals = [m.final async for m in client.inference.Generate(request) if m.HasField("final")]
        assert len(finals) == 1
        return finals[0]

    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await final(101)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "allows at most 100" in (err.value.details() or "")
        assert ("minerva-param", "sampling.max_tokens") in tuple(err.value.trailing_metadata())
        await final(1)  # loaded and warm: the time limit below is generation only
        # 100 tokens take about 0.8 s on this CPU: the 0.1 s limit ends the stream first.
        for max_tokens in (100, None):
            done = await final(max_tokens)
            assert done.finish_reason == pb.FINISH_REASON_LENGTH
            assert 1 <= done.usage.completion_tokens < 100
            assert done.timings.total_ms - done.timings.queue_ms < 1000
    finally:
        await client.channel.close()
        await core.stop(0)
