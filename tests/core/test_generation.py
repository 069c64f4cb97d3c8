"""InferenceService through a real in-process server and the real default model."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from minerva.v1 import inference_pb2 as pb

from core.engine.base import Engine
from core.engine.tokenizer import Tokenizer
from tests.conftest import DEFAULT_MODEL_ID
from tests.core.conftest import Client

pytestmark = pytest.mark.asyncio(loop_scope="session")

QUESTION = [
    pb.ChatMessage(role="user", content="What is the capital of France? Answer in one word.")
]


async def collect(
    call: grpc.aio.UnaryStreamCall,
) -> tuple[list[pb.GenerationChunk], pb.GenerationFinal]:
    chunks, final = [], None
    async for message in call:
        if message.WhichOneof("event") == "chunk":
            assert final is None, "chunk after the final message"
            chunks.append(message.chunk)
        else:
            final = message.final
    assert final is not None, "stream ended without a final message"
    return chunks, final


def text_of(chunks: list[pb.GenerationChunk]) -> str:
    return "".join(c.text for c in chunks)


async def cancel_after(call: grpc.aio.UnaryStreamCall, tokens: int) -> int:
    """Read until `tokens` tokens arrived, cancel the call; returns how many arrived."""
    received = 0
    async for message in call:
        received += len(message.chunk.token_ids)
        if received >= tokens:
            break
    call.cancel()
    return received


async def wait_idle(engine: Engine) -> None:
    """The server sees a cancellation a moment after the client: wait (bounded) for it."""
    for _ in range(200):
        if not engine.busy:
            return
        await asyncio.sleep(0.01)


async def test_chat_streams_an_answer_with_usage_and_timings(client: Client) -> None:
    request = pb.ChatRequest(
        model_id=DEFAULT_MODEL_ID,
        messages=QUESTION,
        sampling=pb.SamplingParams(temperature=0.0, max_tokens=40),
    )
    chunks, final = await collect(client.inference.Chat(request))
    assert len(chunks) >= 3
    assert "Paris" in text_of(chunks)
    assert final.usage.prompt_tokens > 10
    assert final.usage.completion_tokens == sum(len(c.token_ids) for c in chunks)
    assert final.finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH)
    assert final.timings.time_to_first_token_ms > 0
    assert final.timings.total_ms >= final.timings.time_to_first_token_ms
    assert final.fingerprint.startswith("fp_")
    assert chunks[0].fingerprint == final.fingerprint
    assert not any(c.fingerprint for c in chunks[1:])


async def test_repeated_chat_reuses_the_cached_prompt(client: Client) -> None:
    request = pb.ChatRequest(
        model_id=DEFAULT_MODEL_ID,
        messages=QUESTION,
        sampling=pb.SamplingParams(temperature=0.0, max_tokens=4),
    )
    _, first = await collect(client.inference.Chat(request))
    _, second = await collect(client.inference.Chat(request))
    assert second.usage.cached_prompt_tokens == first.usage.prompt_tokens - 1


async def test_generate_max_tokens_gives_length(client: Client) -> None:
    request = pb.GenerateRequest(
        model_id=DEFAULT_MODEL_ID,
        text="Once upon a time",
        sampling=pb.SamplingParams(max_tokens=5, seed=1),
    )
    chunks, final = await collect(client.inference.Generate(request))
    assert final.finish_reason == pb.FINISH_REASON_LENGTH
    assert final.usage.completion_tokens == 5
    assert sum(len(c.token_ids) for c in chunks) == 5


async def test_same_seed_same_text_other_seed_differs(client: Client) -> None:
    def request(seed: int) -> pb.GenerateRequest:
        return pb.GenerateRequest(
            model_id=DEFAULT_MODEL_ID,
            text="My favourite animal is",
            sampling=pb.SamplingParams(temperature=1.0, seed=seed, max_tokens=24),
        )

    a = text_of((await collect(client.inference.Generate(request(7))))[0])
    b = text_of((await collect(client.inference.Generate(request(7))))[0])
    others = {
        text_of((await collect(client.inference.Generate(request(s))))[0]) for s in (8, 9, 10)
    }
    assert a == b
    assert others - {a}, "three other seeds all reproduced seed 7's text"


async def test_stop_string_ends_generation_and_is_not_returned(client: Client) -> None:
    base = pb.GenerateRequest(
        model_id=DEFAULT_MODEL_ID,
        text="Count: 1, 2, 3, 4,",
        sampling=pb.SamplingParams(temperature=0.0, max_tokens=30),
    )
    free = text_of((await collect(client.inference.Generate(base)))[0])
    assert " 6" in free, free
    base.sampling.stop.append(" 6")
    chunks, final = await collect(client.inference.Generate(base))
    assert final.finish_reason == pb.FINISH_REASON_STOP
    assert final.matched_stop == " 6"
    assert text_of(chunks) == free[: free.index(" 6")]


async def test_token_id_prompt_and_logit_bias_ban(client: Client) -> None:
    tokens = await client.inference.Tokenize(
        pb.TokenizeRequest(model_id=DEFAULT_MODEL_ID, text="The sky is")
    )
    greedy = pb.GenerateRequest(
        model_id=DEFAULT_MODEL_ID,
        token_ids=pb.TokenIds(ids=tokens.token_ids),
        sampling=pb.SamplingParams(temperature=0.0, max_tokens=1),
    )
    chunks, _ = await collect(client.inference.Generate(greedy))
    first = chunks[0].token_ids[0]
    greedy.sampling.logit_bias[first] = -100
    banned, _ = await collect(client.inference.Generate(greedy))
    assert banned[0].token_ids[0] != first


async def test_tokenize_detokenize_round_trip(client: Client) -> None:
    text = "Hello, world! Ünïcödé ✓"
    tokens = await client.inference.Tokenize(
        pb.TokenizeRequest(model_id=DEFAULT_MODEL_ID, text=text, add_special=False)
    )
    assert len(tokens.token_ids) > 5
    back = await client.inference.Detokenize(
        pb.DetokenizeRequest(model_id=DEFAULT_MODEL_ID, token_ids=tokens.token_ids)
    )
    assert back.text == text
    special = await client.inference.Tokenize(
        pb.TokenizeRequest(
            model_id=DEFAULT_MODEL_ID, text="<|im_start|>", add_special=False, parse_special=True
        )
    )
    assert len(special.token_ids) == 1


async def test_embed_returns_unit_vectors_in_order(client: Client) -> None:
    request = pb.EmbedRequest(
        model_id=DEFAULT_MODEL_ID,
        inputs=[
            pb.EmbedInput(text="The cat sat on the mat."),
            pb.EmbedInput(text="A cat was sitting on a rug."),
            pb.EmbedInput(text="Quarterly revenue grew by eight percent."),
        ],
    )
    response = await client.inference.Embed(request)
    vectors = [list(e.values) for e in response.embeddings]
    assert [len(v) for v in vectors] == [576, 576, 576]
    for v in vectors:
        assert sum(x * x for x in v) == pytest.approx(1.0, rel=1e-3)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2])
    assert response.usage.prompt_tokens > 15


async def test_an_embedding_owes_nothing_to_the_input_before_it(client: Client) -> None:
    # The context's cells are cleared between inputs, not zeroed: what a longer input left in
    # them must stay masked out.
    short = pb.EmbedInput(text="The cat sat on the mat.")
    longer = pb.EmbedInput(text="Quarterly revenue grew by eight percent, " * 12)
    alone = await client.inference.Embed(pb.EmbedRequest(model_id=DEFAULT_MODEL_ID, inputs=[short]))
    after = await client.inference.Embed(
        pb.EmbedRequest(model_id=DEFAULT_MODEL_ID, inputs=[longer, short])
    )
    assert list(after.embeddings[1].values) == pytest.approx(
        list(alone.embeddings[0].values), abs=1e-5
    )
    assert list(after.embeddings[0].values) != pytest.approx(
        list(alone.embeddings[0].values), abs=1e-2
    )


async def test_cancel_stops_the_token_loop_and_frees_the_model(client: Client) -> None:
    # End-of-generation tokens banned: only the cancel can end this before 1000 tokens.
    no_eog = {0: -100.0, 1: -100.0, 2: -100.0, 4: -100.0}
    request = pb.GenerateRequest(
        model_id=DEFAULT_MODEL_ID,
        text="Write a very long story about dragons.",
        sampling=pb.SamplingParams(temperature=0.7, seed=3, max_tokens=1000, logit_bias=no_eog),
    )
    received = await cancel_after(client.inference.Generate(request), 5)
    engine = client.core.manager._slots[DEFAULT_MODEL_ID].engine
    assert engine is not None
    await wait_idle(engine)
    assert not engine.busy, "token loop still running after cancel"
    assert engine.last_result is not None
    assert engine.last_result.finish_reason.value == "cancelled"
    # Cancelled within a token or two of what the client saw, not after 1000.
    assert engine.last_result.completion_tokens <= received + 3
    after = pb.GenerateRequest(
        model_id=DEFAULT_MODEL_ID, text="Hi", sampling=pb.SamplingParams(max_tokens=2)
    )
    _, final = await collect(client.inference.Generate(after))
    assert final.usage.completion_tokens == 2
    assert final.timings.queue_ms < 1000


async def test_queue_overflow_is_resource_exhausted_at_once(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenized: list[str] = []
    real_tokenize = Tokenizer.tokenize

    async def counted(
        self: Tokenizer, text: str, add_special: bool, parse_special: bool
    ) -> list[int]:
        tokenized.append(text)
        return await real_tokenize(self, text, add_special, parse_special)

    monkeypatch.setattr(Tokenizer, "tokenize", counted)
    request = pb.GenerateRequest(
        model_id=DEFAULT_MODEL_ID,
        text="Tell me everything about the sea.",
        # End-of-generation banned: every served stream runs to max_tokens.
        sampling=pb.SamplingParams(
            max_tokens=60, seed=1, logit_bias={0: -100.0, 1: -100.0, 2: -100.0}
        ),
    )
    # 8 slots + queue_size=4 waiting: 12 are served, the rest refused.
    calls = [client.inference.Generate(request) for _ in range(15)]
    outcomes = await asyncio.gather(*(collect(c) for c in calls), return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    served = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(served) == 12 and len(refused) == 3
    assert all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in refused)
    assert all(final.usage.completion_tokens == 60 for _, final in served)
    # Refused before any work on their prompts: a place is reserved before tokenizing.
    assert len(tokenized) == 12


@pytest.mark.parametrize(
    ("prompt", "penalty"),
    [
        ("Repeat after me: la la la la", {"repeat_penalty": 1.5}),
        ("Repeat after me: la la la la", {"frequency_penalty": 1.5}),
        # Presence is a flat -2 once a token was generated: it needs a closer race to matter.
        ("Name three colors:", {"presence_penalty": 2.0}),
    ],
)
async def test_penalties_change_the_output_and_never_fail(
    client: Client, prompt: str, penalty: dict[str, float]
) -> None:
    def request(**penalties: float) -> pb.GenerateRequest:
        sampling = pb.SamplingParams(temperature=0.0, max_tokens=40, **penalties)
        return pb.GenerateRequest(model_id=DEFAULT_MODEL_ID, text=prompt, sampling=sampling)

    plain = text_of((await collect(client.inference.Generate(request())))[0])
    chunks, final = await collect(client.inference.Generate(request(**penalty)))
    assert final.usage.completion_tokens > 0
    assert text_of(chunks) != plain


async def test_context_limit_caps_one_request(client: Client) -> None:
    """Prompt + generated tokens within the limit; beyond the loaded context a 400 (Ollama's
    num_ctx is context_size instead: tests/core/test_context_size.py)."""
    sampling = pb.SamplingParams(temperature=0.0, max_tokens=200)
    tokens = pb.TokenIds(ids=list(range(100, 110)))
    request = pb.GenerateRequest(
        model_id=DEFAULT_MODEL_ID, token_ids=tokens, sampling=sampling, context_limit=14
    )
    _chunks, final = await collect(client.inference.Generate(request))
    assert final.usage.prompt_tokens == 10 and final.usage.completion_tokens <= 4
    assert final.finish_reason in (pb.FINISH_REASON_LENGTH, pb.FINISH_REASON_STOP)
    too_small = pb.GenerateRequest(
        model_id=DEFAULT_MODEL_ID, token_ids=tokens, sampling=sampling, context_limit=5
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(client.inference.Generate(too_small))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    too_big = pb.GenerateRequest(
        model_id=DEFAULT_MODEL_ID, token_ids=tokens, sampling=sampling, context_limit=10**6
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await collect(client.inference.Generate(too_big))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("minerva-param", "context_limit") in tuple(err.value.trailing_metadata())
