"""ModelStats, the compact listing and token pieces through the real core."""

from __future__ import annotations

import pytest
from minerva.v1 import inference_pb2 as pb
from minerva.v1 import models_pb2

from tests.conftest import DEFAULT_MODEL_ID
from tests.core.conftest import CORRUPT_ID, Client
from tests.core.test_generation import collect

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_loaded_model_reports_its_engine_counters(client: Client) -> None:
    request = pb.GenerateRequest(
        model_id=DEFAULT_MODEL_ID,
        text="Counting: one, two,",
        sampling=pb.SamplingParams(temperature=0.0, max_tokens=5),
    )
    await collect(client.inference.Generate(request))
    before = await _stats(client)
    _, final = await collect(client.inference.Generate(request))  # the same prompt: cached
    after = await _stats(client)
    assert after.slots >= 1 and after.queue_depth == 0 and after.active_sequences == 0
    assert after.decode_tokens - before.decode_tokens >= final.usage.completion_tokens - 1
    assert (
        after.prefix_cache_hit_tokens - before.prefix_cache_hit_tokens
        >= (final.usage.cached_prompt_tokens)
        > 0
    )


async def _stats(client: Client) -> models_pb2.ModelStats:
    listing = await client.models.ListModels(models_pb2.ListModelsRequest())
    [model] = [m for m in listing.models if m.id == DEFAULT_MODEL_ID]
    assert model.HasField("stats")
    return model.stats


async def test_the_compact_listing_has_one_line_per_model(client: Client) -> None:
    plain = await client.models.ListModels(models_pb2.ListModelsRequest())
    assert plain.compact == ""
    listing = await client.models.ListModels(models_pb2.ListModelsRequest(compact=True))
    lines = listing.compact.splitlines()
    assert lines[0] == "MODEL|QUANT|SIZE_MB|TENSORS|LAYERS|VOCAB"
    assert f"{CORRUPT_ID}|||||" in lines
    [line] = [line for line in lines if line.startswith(DEFAULT_MODEL_ID + "|")]
    _, quant, size, tensors, layers, vocab = line.split("|")
    assert (quant, tensors, layers, vocab) == ("Q4_1", "272", "30", "49152")
    assert 90 < float(size) < 110


async def test_tokenize_can_return_each_tokens_piece(client: Client) -> None:
    reply = await client.inference.Tokenize(
        pb.TokenizeRequest(model_id=DEFAULT_MODEL_ID, text="Hello wörld", with_pieces=True)
    )
    assert len(reply.pieces) == len(reply.token_ids) > 1
    assert b"".join(reply.pieces).decode() == "Hello wörld"
