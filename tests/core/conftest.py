"""A real in-process grpc.aio core on 127.0.0.1:0 over a temp models dir, shared by core tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from minerva.v1 import inference_pb2 as pb
from minerva.v1 import inference_pb2_grpc, models_pb2_grpc

from core.server import CoreServer, start
from core.settings import Settings
from tests.conftest import DEFAULT_MODEL_ID, DEFAULT_MODEL_PATH

CORRUPT_ID = "corrupt"


def make_models_dir(root: Path, *models: Path) -> Path:
    """A models dir of symlinks to real files, plus one GGUF with a bad magic number."""
    root.mkdir(parents=True, exist_ok=True)
    for model in models:
        os.symlink(model, root / model.name)
    (root / f"{CORRUPT_ID}.gguf").write_bytes(b"NOPE" + b"\0" * 60)
    return root


def core_settings(models_dir: Path, **overrides: object) -> Settings:
    base = Settings(
        listen="127.0.0.1:0",
        models_dir=models_dir,
        # make_models_dir links the real models in: they resolve under the repository's models/.
        allowed_roots=(DEFAULT_MODEL_PATH.parent,),
        threads=2,
        idle_ttl_s=0,
        default_context_size=2048,
        shutdown_grace_s=1.0,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


class Client:
    """Stubs over one channel to a started core."""

    def __init__(self, core: CoreServer) -> None:
        self.core = core
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{core.port}")
        self.models = models_pb2_grpc.ModelServiceStub(self.channel)
        self.inference = inference_pb2_grpc.InferenceServiceStub(self.channel)


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    if not DEFAULT_MODEL_PATH.is_file():
        pytest.fail(f"{DEFAULT_MODEL_PATH} is missing: run `make models`")
    models_dir = make_models_dir(tmp_path_factory.mktemp("models"), DEFAULT_MODEL_PATH)
    core = await start(core_settings(models_dir, queue_size=4))
    c = Client(core)
    yield c
    await c.channel.close()
    await core.stop(0)


async def refused_while_others_are_served(models: Path, model_id: str) -> str:
    """The details of the refusal to load `model_id`; the default model still answers after it."""
    (models / DEFAULT_MODEL_PATH.name).symlink_to(DEFAULT_MODEL_PATH)
    core = await start(core_settings(models, allowed_roots=(models, DEFAULT_MODEL_PATH.parent)))
    client = Client(core)
    try:
        request = pb.GenerateRequest(
            model_id=model_id, text="Hi", sampling=pb.SamplingParams(max_tokens=2)
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in client.inference.Generate(request):
                pass
        assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        good = pb.GenerateRequest(
            model_id=DEFAULT_MODEL_ID,
            text="The capital of France is",
            sampling=pb.SamplingParams(temperature=0, max_tokens=4),
        )
        replies = [m async for m in client.inference.Generate(good)]
        assert replies[-1].final.usage.completion_tokens == 4
        return caught.value.details() or ""
    finally:
        await client.channel.close()
        await core.stop(0)
