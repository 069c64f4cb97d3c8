"""ModelService through a real in-process server: metadata, load/unload, health, reflection."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from minerva.v1 import models_pb2

from tests.conftest import DEFAULT_MODEL_ID, DEFAULT_MODEL_PATH
from tests.core.conftest import CORRUPT_ID, Client

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_list_models_reports_real_metadata_and_the_corrupt_file(client: Client) -> None:
    response = await client.models.ListModels(models_pb2.ListModelsRequest())
    by_id = {m.id: m for m in response.models}
    assert set(by_id) == {DEFAULT_MODEL_ID, CORRUPT_ID}
    meta = by_id[DEFAULT_MODEL_ID].metadata
    assert meta.format == models_pb2.MODEL_FORMAT_GGUF
    assert (meta.tensor_count, meta.layer_count, meta.vocab_size, meta.context_length) == (
        272,
        30,
        49152,
        8192,
    )
    assert meta.quantization == "Q4_1"
    assert meta.architecture == "llama"
    assert meta.has_chat_template
    assert meta.file_size_bytes == 98362432
    assert by_id[DEFAULT_MODEL_ID].servable
    assert by_id[DEFAULT_MODEL_ID].fingerprint.startswith("fp_")
    assert by_id[DEFAULT_MODEL_ID].modified_unix == int(DEFAULT_MODEL_PATH.stat().st_mtime)
    broken = by_id[CORRUPT_ID]
    assert broken.load_state == models_pb2.LOAD_STATE_FAILED
    assert "magic" in broken.error.lower()
    assert not broken.HasField("metadata")


async def test_get_model_unknown_is_not_found(client: Client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.models.GetModel(models_pb2.GetModelRequest(model_id="no-such-model"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-model" in (err.value.details() or "")


async def test_get_model_corrupt_file_is_failed_precondition(client: Client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.models.GetModel(models_pb2.GetModelRequest(model_id=CORRUPT_ID))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert CORRUPT_ID in (err.value.details() or "")


async def test_generation_on_corrupt_model_fails_alone(client: Client) -> None:
    from minerva.v1 import inference_pb2

    call = client.inference.Generate(inference_pb2.GenerateRequest(model_id=CORRUPT_ID, text="hi"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in call:
            pass
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    ok = await client.models.GetModel(models_pb2.GetModelRequest(model_id=DEFAULT_MODEL_ID))
    assert ok.model.metadata.tensor_count == 272


async def test_load_streams_progress_then_ready_and_unload(client: Client) -> None:
    health = health_pb2_grpc.HealthStub(client.channel)
    service = f"model/{DEFAULT_MODEL_ID}"
    await client.models.UnloadModel(models_pb2.UnloadModelRequest(model_id=DEFAULT_MODEL_ID))
    status = await health.Check(health_pb2.HealthCheckRequest(service=service))
    assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING

    events = [
        e
        async for e in client.models.LoadModel(
            models_pb2.LoadModelRequest(model_id=DEFAULT_MODEL_ID)
        )
    ]
    stages = [e.stage for e in events]
    assert stages[-1] == models_pb2.LOAD_STAGE_READY
    assert models_pb2.LOAD_STAGE_LOADING_WEIGHTS in stages
    # Weights, then the context, then ready: each stage after the last weights event.
    assert stages[-2] == models_pb2.LOAD_STAGE_CREATING_CONTEXT
    assert stages.index(models_pb2.LOAD_STAGE_CREATING_CONTEXT) > max(
        i for i, st in enumerate(stages) if st == models_pb2.LOAD_STAGE_LOADING_WEIGHTS
    )
    progress = [e.progress for e in events if e.stage == models_pb2.LOAD_STAGE_LOADING_WEIGHTS]
    assert progress == sorted(progress) and progress[-1] == pytest.approx(1.0)
    assert events[-1].model.load_state == models_pb2.LOAD_STATE_LOADED
    status = await health.Check(health_pb2.HealthCheckRequest(service=service))
    assert status.status == health_pb2.HealthCheckResponse.SERVING

    again = [
        e
        async for e in client.models.LoadModel(
            models_pb2.LoadModelRequest(model_id=DEFAULT_MODEL_ID)
        )
    ]
    assert [e.stage for e in again] == [models_pb2.LOAD_STAGE_READY]

    unloaded = await client.models.UnloadModel(
        models_pb2.UnloadModelRequest(model_id=DEFAULT_MODEL_ID)
    )
    assert unloaded.was_loaded
    second = await client.models.UnloadModel(
        models_pb2.UnloadModelRequest(model_id=DEFAULT_MODEL_ID)
    )
    assert not second.was_loaded
    got = await client.models.GetModel(models_pb2.GetModelRequest(model_id=DEFAULT_MODEL_ID))
    assert got.model.load_state == models_pb2.LOAD_STATE_UNLOADED


async def test_health_server_wide_and_unknown_service(client: Client) -> None:
    health = health_pb2_grpc.HealthStub(client.channel)
    overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert overall.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await health.Check(health_pb2.HealthCheckRequest(service="model/nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_watch_streams_the_status(client: Client) -> None:
    """Watch is what gRPC's client-side health checking calls (the bridge's channels use it):
    it streams the current status, through the core's interceptors."""
    health = health_pb2_grpc.HealthStub(client.channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
    first = await watch.read()
    watch.cancel()
    assert first.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_and_describes_services(client: Client) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)

    async def ask(**kw: str) -> reflection_pb2.ServerReflectionResponse:
        async for r in stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(**kw)])
        ):
            return r
        raise AssertionError("no reflection response")

    listed = await ask(list_services="")
    names = {s.name for s in listed.list_services_response.service}
    assert {
        "minerva.v1.ModelService",
        "minerva.v1.InferenceService",
        "grpc.health.v1.Health",
    } <= names
    described = await ask(file_containing_symbol="minerva.v1.InferenceService")
    assert described.file_descriptor_response.file_descriptor_proto
