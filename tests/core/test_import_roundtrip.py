"""The real default model round-tripped: SmolLM2's GGUF exported to a Hugging Face directory
(scripts/export_hf.py), imported by the core, and answering greedy chats as the GGUF does."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from minerva.v1 import inference_pb2 as pb
from minerva.v1 import models_pb2

from core.server import start
from scripts.export_hf import export
from tests.conftest import DEFAULT_MODEL_ID, DEFAULT_MODEL_PATH
from tests.core.conftest import Client, core_settings

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROMPTS = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three primary colors.",
)
# The export dequantizes Q4_1 and the import writes f16: the same weights to f16 rounding, but
# not the same kernels (Q4_1 quantizes activations to 8 bits), so logits differ a little and a
# greedy path may part at a near tie. Measured: every gap under 0.13 nats.
SAME_PREFIX = 4
TOKENS = 12
NEAR_TIE = 0.5
# Where free-running replies may part at their first token.
FIRST_TOKEN_TIE = 0.2


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def both(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    models = tmp_path_factory.mktemp("roundtrip")
    os.symlink(DEFAULT_MODEL_PATH, models / DEFAULT_MODEL_PATH.name)
    export(DEFAULT_MODEL_PATH, models / "smollm2-hf")
    core = await start(core_settings(models))
    client = Client(core)
    yield client
    await client.channel.close()
    await core.stop(0)


async def _greedy(client: Client, model_id: str, prompt: str) -> tuple[list[int], str]:
    request = pb.ChatRequest(
        model_id=model_id,
        messages=[pb.ChatMessage(role="user", content=prompt)],
        sampling=pb.SamplingParams(temperature=0.0, max_tokens=TOKENS),
    )
    ids, text = [], ""
    async for message in client.inference.Chat(request):
        if message.HasField("chunk"):
            ids += message.chunk.token_ids
            text += message.chunk.text
    return ids, text


async def _prompt_ids(client: Client, model_id: str, prompt: str) -> list[int]:
    rendered = await client.inference.ApplyChatTemplate(
        pb.ApplyChatTemplateRequest(
            model_id=model_id, messages=[pb.ChatMessage(role="user", content=prompt)]
        )
    )
    reply = await client.inference.Tokenize(
        pb.TokenizeRequest(
            model_id=model_id, text=rendered.prompt, add_special=False, parse_special=True
        )
    )
    return list(reply.token_ids)


async def _next_token(client: Client, model_id: str, ids: list[int]) -> pb.SampledLogprob:
    request = pb.GenerateRequest(
        model_id=model_id,
        token_ids=pb.TokenIds(ids=ids),
        sampling=pb.SamplingParams(temperature=0.0, max_tokens=1, logprobs=True, top_logprobs=5),
    )
    async for message in client.inference.Generate(request):
        if message.HasField("chunk") and message.chunk.logprobs:
            return message.chunk.logprobs[0]
    raise AssertionError("no token generated")


@pytest.mark.parametrize("prompt", PROMPTS)
async def test_imported_model_ranks_the_ggufs_reply_at_the_top(both: Client, prompt: str) -> None:
    """Teacher-forced along the GGUF's own greedy reply: at every position the imported model
    puts the GGUF's token first, or within NEAR_TIE nats of its own first choice."""
    gguf_ids, gguf_text = await _greedy(both, DEFAULT_MODEL_ID, prompt)
    context = await _prompt_ids(both, "smollm2-hf", prompt)
    assert context == await _prompt_ids(both, DEFAULT_MODEL_ID, prompt)
    assert len(gguf_ids) == TOKENS
    for position, token in enumerate(gguf_ids):
        step = await _next_token(both, "smollm2-hf", context + gguf_ids[:position])
        ranked = {t.token_id: t.logprob for t in step.top}
        assert token in ranked, (position, gguf_text)
        assert ranked[token] >= step.top[0].logprob - NEAR_TIE, (position, gguf_text)


async def test_greedy_replies_start_the_same_but_at_near_ties(both: Client) -> None:
    """Free-running, a near tie may send a reply its own way from the first token (measured,
    with the CPU's plain attention kernel: 0.08 and 0.11 nats on two of these prompts); a reply
    that starts differently must start where the imported model nearly ties the GGUF's token."""
    for prompt in PROMPTS:
        gguf_ids, _ = await _greedy(both, DEFAULT_MODEL_ID, prompt)
        hf_ids, hf_text = await _greedy(both, "smollm2-hf", prompt)
        assert len(hf_ids) >= SAME_PREFIX and hf_text.strip()
        if hf_ids[:1] != gguf_ids[:1]:
            context = await _prompt_ids(both, "smollm2-hf", prompt)
            step = await _next_token(both, "smollm2-hf", context)
            ranked = {t.token_id: t.logprob for t in step.top}
            assert step.top[0].token_id == hf_ids[0]
            assert ranked.get(gguf_ids[0], -99.0) >= step.top[0].logprob - FIRST_TOKEN_TIE, prompt


async def test_imported_model_reports_its_checkpoint(both: Client) -> None:
    reply = await both.models.GetModel(models_pb2.GetModelRequest(model_id="smollm2-hf"))
    meta = reply.model.metadata
    assert meta.format == models_pb2.MODEL_FORMAT_SAFETENSORS
    assert (meta.architecture, meta.layer_count, meta.vocab_size) == ("llama", 30, 49152)
    assert reply.model.servable
