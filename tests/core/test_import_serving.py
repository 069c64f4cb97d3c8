"""SafeTensors checkpoints through the real gRPC core: converted on first use (a chat, or LoadModel
streaming CONVERTING), cached and reused, and malformed checkpoints refused one by one while the
server goes on serving."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple
from collections.abc import AsyncIterator
from pathlib import Path

import gguf
import grpc
import pytest
import pytest_asyncio
from minerva.v1 import inference_pb2 as pb
from minerva.v1 import models_pb2

from core.server import start
from core.settings import ImportType, ModelOptions
from scripts.hf_checkpoint import SHAPE_135M, Shape, tiny_checkpoint
from tests.core.conftest import Client, core_settings
from tests.core.test_import_logits import PROMPT, reference_logits

pytestmark = pytest.mark.asyncio(loop_scope="session")

_Usage = namedtuple("_Usage", "total used free")
PICKLE_ERROR = "unsupported: pickle checkpoints are not loaded; convert to SafeTensors"


def _edit_json(path: Path, **changes: object) -> None:
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


def _malformed(models: Path) -> dict[str, str]:
    """Broken checkpoints by model id, each with the words its error must contain."""
    expected: dict[str, str] = {}

    def broken(name: str, words: str, **kwargs: object) -> Path:
        tiny_checkpoint(models / name, **kwargs)  # type: ignore[arg-type]
        expected[name] = words
        return models / name

    (broken("no-config", "config.json is missing") / "config.json").unlink()
    _edit_json(
        broken("bad-shape", "has shape [64, 128], but config.json implies [64, 130]")
        / "config.json",
        intermediate_size=130,
    )
    (broken("no-shard", "cannot open", shards=2) / "model-00002-of-00002.safetensors").unlink()
    _edit_json(
        broken(
            "unknown-arch",
            "['GPTNeoXForCausalLM'] cannot be imported; "
            "supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM",
        )
        / "config.json",
        architectures=["GPTNeoXForCausalLM"],
    )
    (broken("no-tokenizer", "tokenizer.json is missing") / "tokenizer.json").unlink()
    _edit_json(
        broken("unigram-tokenizer", "tokenizer model 'Unigram' cannot be imported")
        / "tokenizer.json",
        model={"type": "Unigram", "vocab": [["a", 0.0]]},
    )
    pickled = models / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not to be unpickled")
    (models / "weights.pt").write_bytes(b"\x80\x04not to be unpickled")
    expected["pickled"] = expected["weights"] = PICKLE_ERROR
    return expected


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def hf(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[Client, dict]]:
    models = tmp_path_factory.mktemp("hf-models")
    weights = tiny_checkpoint(models / "tiny-llama")
    # A vocabulary as big as SmolLM2's: converting and loading it takes a while to see.
    tiny_checkpoint(models / "first-chat", shape=Shape(vocab=SHAPE_135M.vocab))
    tiny_checkpoint(models / "tiny-qwen2", architecture="Qwen2ForCausalLM", tied=True)
    malformed = _malformed(models)
    core = await start(core_settings(models, import_cache_dir=models.parent / "hf-cache"))
    client = Client(core)
    yield client, {"weights": weights, "malformed": malformed, "cache": models.parent / "hf-cache"}
    await client.channel.close()
    await core.stop(0)


def _greedy_reference(weights: dict, tokens: list[int], count: int) -> list[int]:
    out: list[int] = []
    for _ in range(count):
        logits = reference_logits(weights, Shape(), tokens + out)[-1]
        out.append(int(logits.argmax()))
    return out


async def test_first_chat_converts_then_answers(hf: tuple[Client, dict]) -> None:
    client, ctx = hf
    request = pb.ChatRequest(
        model_id="first-chat",
        messages=[pb.ChatMessage(role="user", content="hello world")],
        sampling=pb.SamplingParams(temperature=0.0, max_tokens=6),
    )
    chunks, final = [], None
    async for message in client.inference.Chat(request):
        if message.HasField("chunk"):
            chunks.append(message.chunk)
        else:
            final = message.final
    assert final is not None and chunks
    # <|im_start|> u s e r \n hello Ġworld <|im_end|> \n <|im_start|> a s s i s t a n t \n
    assert final.usage.prompt_tokens == 21
    assert final.usage.completion_tokens == sum(len(c.token_ids) for c in chunks) >= 1
    assert len(list(ctx["cache"].glob("first-chat-*-f16-*.gguf"))) == 1
    # The conversion and the load happened inside this request and are counted in its timings:
    # the same request on the loaded model waits a small fraction of that.
    again = None
    async for message in client.inference.Chat(request):
        again = message.final if message.HasField("final") else again
    assert again is not None
    assert final.timings.total_ms > final.timings.queue_ms > 5 * again.timings.queue_ms


async def test_generation_follows_the_weights(hf: tuple[Client, dict]) -> None:
    client, ctx = hf
    request = pb.GenerateRequest(
        model_id="tiny-llama",
        token_ids=pb.TokenIds(ids=PROMPT),
        sampling=pb.SamplingParams(temperature=0.0, max_tokens=3),
    )
    ids = [
        i
        async for m in client.inference.Generate(request)
        if m.HasField("chunk")
        for i in m.chunk.token_ids
    ]
    weights = {
        k: v.astype("float16").astype("float32") if v.ndim > 1 else v
        for k, v in ctx["weights"].items()
    }
    assert ids == _greedy_reference(weights, PROMPT, 3)


async def test_load_streams_converting_once_then_reuses_the_cache(
    hf: tuple[Client, dict],
) -> None:
    client, ctx = hf
    load = models_pb2.LoadModelRequest(model_id="tiny-qwen2")
    events = [e async for e in client.models.LoadModel(load)]
    stages = [e.stage for e in events]
    assert stages[0] == models_pb2.LOAD_STAGE_CONVERTING
    converting = [e.progress for e in events if e.stage == models_pb2.LOAD_STAGE_CONVERTING]
    assert converting == sorted(converting) and converting[-1] == pytest.approx(1.0)
    assert stages.index(models_pb2.LOAD_STAGE_LOADING_WEIGHTS) > len(converting) - 1
    assert stages[-1] == models_pb2.LOAD_STAGE_READY
    assert events[-1].model.servable
    assert events[-1].model.metadata.format == models_pb2.MODEL_FORMAT_SAFETENSORS
    cached = next(ctx["cache"].glob("tiny-qwen2-*.gguf"))
    written = cached.stat().st_mtime_ns

    await client.models.UnloadModel(models_pb2.UnloadModelRequest(model_id="tiny-qwen2"))
    again = [e.stage async for e in client.models.LoadModel(load)]
    assert models_pb2.LOAD_STAGE_CONVERTING not in again
    assert again[-1] == models_pb2.LOAD_STAGE_READY
    assert cached.stat().st_mtime_ns == written


async def test_each_malformed_checkpoint_gets_its_own_error(hf: tuple[Client, dict]) -> None:
    client, ctx = hf
    for model_id, words in ctx["malformed"].items():
        call = client.models.LoadModel(models_pb2.LoadModelRequest(model_id=model_id))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in call:
                pass
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, model_id
        assert words in (err.value.details() or ""), (model_id, err.value.details())
        assert model_id in (err.value.details() or "")
    listed = {
        m.id: m for m in (await client.models.ListModels(models_pb2.ListModelsRequest())).models
    }
    for model_id, words in ctx["malformed"].items():
        assert words in listed[model_id].error, (model_id, listed[model_id].error)
    assert listed["weights"].metadata.format == models_pb2.MODEL_FORMAT_UNSPECIFIED
    assert not listed["weights"].servable and not listed["pickled"].servable
    # Nothing half-written is left behind, and the good models still serve.
    assert not list(ctx["cache"].glob("*.partial"))
    request = pb.GenerateRequest(
        model_id="tiny-llama",
        text="hello",
        sampling=pb.SamplingParams(temperature=0.0, max_tokens=2),
    )
    finals = [m.final async for m in client.inference.Generate(request) if m.HasField("final")]
    assert finals[0].usage.completion_tokens == 2


async def test_a_full_disk_is_refused_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    tiny_checkpoint(models / "big", shape=Shape(vocab=SHAPE_135M.vocab))
    core = await start(core_settings(models))
    client = Client(core)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: _Usage(1 << 40, 1 << 40, 1 << 20))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in client.models.LoadModel(models_pb2.LoadModelRequest(model_id="big")):
                pass
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "only 1 MB is free" in (err.value.details() or "")
        assert not list((models / ".cache" / "gguf").glob("*"))
        # Not remembered as the model's failure: once space is back, the load goes through.
        monkeypatch.undo()
        stages = [
            e.stage
            async for e in client.models.LoadModel(models_pb2.LoadModelRequest(model_id="big"))
        ]
        assert stages[0] == models_pb2.LOAD_STAGE_CONVERTING
        assert stages[-1] == models_pb2.LOAD_STAGE_READY
    finally:
        await client.channel.close()
        await core.stop(0)


async def test_a_single_file_with_its_config_beside_it_imports_as_configured(
    tmp_path: Path,
) -> None:
    """A `.safetensors` file (not model.safetensors) configured by path, its config.json and
    tokenizer files beside it, imported to q8_0 as its [[models]] entry asks."""
    models = tmp_path / "models"
    tiny_checkpoint(models / "checkpoint")
    single = models / "checkpoint" / "weights.safetensors"
    (models / "checkpoint" / "model.safetensors").rename(single)
    options = ModelOptions(id="single", path=single, import_type=ImportType.Q8_0)
    core = await start(core_settings(models, models=(options,), allowed_roots=(models,)))
    client = Client(core)
    try:
        stages = [
            e.stage
            async for e in client.models.LoadModel(models_pb2.LoadModelRequest(model_id="single"))
        ]
        assert stages[0] == models_pb2.LOAD_STAGE_CONVERTING
        assert stages[-1] == models_pb2.LOAD_STAGE_READY
        (converted,) = (models / ".cache" / "gguf").glob("weights.safetensors-*-q8_0-*.gguf")
        assert gguf.GGUFReader(converted).fields["general.file_type"].contents() == 7  # Q8_0
        request = pb.GenerateRequest(
            model_id="single",
            text="hello world",
            sampling=pb.SamplingParams(temperature=0.0, max_tokens=3),
        )
        finals = [m.final async for m in client.inference.Generate(request) if m.HasField("final")]
        assert finals[0].usage.prompt_tokens == 2 and finals[0].usage.completion_tokens == 3
    finally:
        await client.channel.close()
        await core.stop(0)
