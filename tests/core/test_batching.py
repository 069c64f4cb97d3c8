"""The batched engine through a real in-process gRPC core: many streams at once, slots, prefixes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from minerva.v1 import inference_pb2 as pb

from core.server import start
from tests.conftest import DEFAULT_MODEL_ID, DEFAULT_MODEL_PATH
from tests.core.conftest import Client, core_settings, make_models_dir
from tests.core.test_generation import cancel_after, collect, text_of, wait_idle

pytestmark = pytest.mark.asyncio(loop_scope="session")

M = DEFAULT_MODEL_ID
# Prompts the model continues predictably under greedy decoding, with how each continues.
COUNTING = {
    "1, 2, 3, 4,": " 5, 6",
    "10, 20, 30, 40,": " 50, 60",
    "a, b, c, d,": " e, f",
    "A, B, C, D,": " E, F",
    "2, 4, 6, 8,": " 10, 12",
    "5, 10, 15, 20,": " 25, 30",
    "11, 12, 13, 14,": " 15, 16",
    "100, 200, 300,": " 400, 500",
}
# End-of-generation tokens of the default model banned: only max_tokens ends these streams.
NO_EOG = {0: -100.0, 1: -100.0, 2: -100.0}


def greedy(prompt: str, max_tokens: int, **extra: object) -> pb.GenerateRequest:
    sampling = pb.SamplingParams(temperature=0.0, max_tokens=max_tokens, **extra)  # type: ignore[arg-type]
    return pb.GenerateRequest(model_id=M, text=prompt, sampling=sampling)


@contextlib.asynccontextmanager
async def own_core(
    tmp_path_factory: pytest.TempPathFactory, **settings: object
) -> AsyncIterator[Client]:
    models_dir = make_models_dir(tmp_path_factory.mktemp("models"), DEFAULT_MODEL_PATH)
    core = await start(core_settings(models_dir, **settings))
    client = Client(core)
    try:
        yield client
    finally:
        await client.channel.close()
        await core.stop(0)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def two_slots(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    """Two slots, so that a third conversation evicts one into the host-RAM prompt cache."""
    async with own_core(
        tmp_path_factory, slots=2, queue_size=8, default_context_size=1024, prompt_cache_mb=64
    ) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def tight(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    """A KV cache that holds one full sequence, shared by two slots."""
    async with own_core(
        tmp_path_factory, slots=2, default_context_size=256, kv_cache_tokens=256
    ) as client:
        yield client


async def test_eight_concurrent_streams_each_continue_their_own_prompt(client: Client) -> None:
    calls = {p: client.inference.Generate(greedy(p, 12)) for p in COUNTING}
    results = await asyncio.gather(*(collect(c) for c in calls.values()))
    for (prompt, expected), (chunks, final) in zip(COUNTING.items(), results, strict=True):
        assert text_of(chunks).startswith(expected), (prompt, text_of(chunks))
        assert final.usage.completion_tokens == 12
        assert {c.index for c in chunks} == {0}
    engine = client.core.manager._slots[M].engine
    assert engine is not None and engine.stats().active_sequences == 0


async def test_cancelling_one_stream_leaves_the_others_whole(client: Client) -> None:
    prompts = list(COUNTING)[:3]
    engine = client.core.manager._slots[M].engine
    assert engine is not None
    decoded_before = engine.stats().decode_tokens
    doomed = client.inference.Generate(greedy("Tell me a story.", 500, logit_bias=NO_EOG))
    others = [client.inference.Generate(greedy(p, 40, logit_bias=NO_EOG)) for p in prompts]
    tasks = [asyncio.ensure_future(collect(c)) for c in others]
    received = await cancel_after(doomed, 3)
    for prompt, (chunks, final) in zip(prompts, await asyncio.gather(*tasks), strict=True):
        assert final.finish_reason == pb.FINISH_REASON_LENGTH
        assert final.usage.completion_tokens == 40
        assert text_of(chunks).startswith(COUNTING[prompt])
    await wait_idle(engine)
    assert engine.stats().active_sequences == 0 and not engine.busy
    # Each finished stream decoded 39 tokens (its last one is sampled, never decoded); the
    # cancelled one stopped within a few tokens of what its client saw, not after 500.
    decoded = engine.stats().decode_tokens - decoded_before
    assert decoded <= 3 * 39 + received + 3


def conversation(system: str, *turns: str) -> list[pb.ChatMessage]:
    messages = [pb.ChatMessage(role="system", content=system)]
    for i, turn in enumerate(turns):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append(pb.ChatMessage(role=role, content=turn))
    return messages


def system_prompt(topic: str) -> str:
    return " ".join(f"Rule {i}: always answer questions about {topic} politely." for i in range(12))


async def chat_turn(
    client: Client, messages: list[pb.ChatMessage], session: str = ""
) -> tuple[str, pb.GenerationFinal]:
    request = pb.ChatRequest(
        model_id=M,
        messages=messages,
        sampling=pb.SamplingParams(temperature=0.0, max_tokens=8),
        session_id=session,
    )
    chunks, final = await collect(client.inference.Chat(request))
    return text_of(chunks), final


async def test_second_turn_reuses_its_prefix_after_other_conversations(client: Client) -> None:
    """Eight slots: the conversation's slot is still there after three others."""
    await second_turn_reuses_prefix(client)


async def test_second_turn_reuses_its_prefix_from_the_prompt_cache(two_slots: Client) -> None:
    """Two slots: three other conversations evict it, and the host-RAM cache brings it back."""
    await second_turn_reuses_prefix(two_slots)


async def second_turn_reuses_prefix(client: Client) -> None:
    first = conversation(system_prompt("gardening"), "How do I water basil?")
    reply, turn1 = await chat_turn(client, first, "garden")
    assert turn1.usage.prompt_tokens > 100
    for topic in ("astronomy", "cooking", "sailing"):
        await chat_turn(client, conversation(system_prompt(topic), "Hello!"), topic)
    second = [*first, pb.ChatMessage(role="assistant", content=reply)]
    second.append(pb.ChatMessage(role="user", content="And mint?"))
    engine = client.core.manager._slots[M].engine
    assert engine is not None
    hits_before = engine.stats().prefix_cache_hit_tokens
    _, turn2 = await chat_turn(client, second, "garden")
    assert turn2.usage.cached_prompt_tokens >= turn1.usage.prompt_tokens - 1
    hits = engine.stats().prefix_cache_hit_tokens - hits_before
    assert hits == turn2.usage.cached_prompt_tokens


async def test_requests_beyond_the_slots_are_served_in_arrival_order(two_slots: Client) -> None:
    prompts = list(COUNTING)[:6]
    firsts: dict[int, float] = {}

    async def run(i: int, call: grpc.aio.UnaryStreamCall) -> pb.GenerationFinal:
        final = None
        async for message in call:
            if message.WhichOneof("event") == "chunk" and i not in firsts:
                firsts[i] = time.perf_counter()
            final = message.final if message.HasField("final") else final
        assert final is not None
        return final

    tasks = []
    for i, prompt in enumerate(prompts):
        tasks.append(
            asyncio.ensure_future(run(i, two_slots.inference.Generate(greedy(prompt, 16))))
        )
        await asyncio.sleep(0.05)  # fixes the arrival order
    finals = await asyncio.gather(*tasks)
    assert all(f.usage.completion_tokens == 16 for f in finals)
    order = sorted(firsts, key=firsts.__getitem__)
    assert order[2:] == [2, 3, 4, 5], order  # the two first ones share the slots at the start
    # The later four waited for a slot; the first two did not.
    assert max(f.timings.queue_ms for f in finals[:2]) < min(f.timings.queue_ms for f in finals[2:])


async def test_kv_exhaustion_fails_only_the_request_that_does_not_fit(tight: Client) -> None:
    older = asyncio.ensure_future(
        collect(tight.inference.Generate(greedy("1, 2, 3,", 200, logit_bias=NO_EOG)))
    )
    await asyncio.sleep(0.3)
    newer = asyncio.ensure_future(
        collect(tight.inference.Generate(greedy("a, b, c,", 200, logit_bias=NO_EOG)))
    )
    outcomes = await asyncio.gather(older, newer, return_exceptions=True)
    assert not isinstance(outcomes[0], BaseException), outcomes[0]
    assert outcomes[0][1].usage.completion_tokens == 200
    failed = outcomes[1]
    assert isinstance(failed, grpc.aio.AioRpcError)
    assert failed.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "KV cache" in (failed.details() or "")
    # The model keeps serving.
    _, final = await collect(tight.inference.Generate(greedy("x, y,", 4)))
    assert final.usage.completion_tokens == 4


async def test_max_tokens_past_the_context_is_clamped_and_ends_with_length(tight: Client) -> None:
    request = greedy("1, 2, 3,", 32000, logit_bias=NO_EOG)
    chunks, final = await collect(tight.inference.Generate(request))
    assert final.finish_reason == pb.FINISH_REASON_LENGTH
    assert final.usage.prompt_tokens + final.usage.completion_tokens == 256
    assert sum(len(c.token_ids) for c in chunks) == final.usage.completion_tokens


async def test_n_three_gives_three_distinct_completions_from_one_prompt(client: Client) -> None:
    sampling = pb.SamplingParams(temperature=1.0, seed=11, max_tokens=24, n=3)
    request = pb.GenerateRequest(model_id=M, text="My favourite animal is", sampling=sampling)
    chunks, final = await collect(client.inference.Generate(request))
    texts = ["".join(c.text for c in chunks if c.index == i) for i in range(3)]
    assert len(set(texts)) == 3, texts
    assert [c.index for c in final.choices] == [0, 1, 2]
    assert final.usage.completion_tokens == sum(c.completion_tokens for c in final.choices)
    tokens = await client.inference.Tokenize(pb.TokenizeRequest(model_id=M, text=request.text))
    assert final.usage.prompt_tokens == len(tokens.token_ids)  # evaluated once, counted once


async def test_presence_and_frequency_penalties_leave_the_first_token(client: Client) -> None:
    prompt = "Repeat after me: la la la la"
    plain, _ = await collect(client.inference.Generate(greedy(prompt, 1)))
    assert plain[0].text == " la"
    for penalty in ({"presence_penalty": 2.0}, {"frequency_penalty": 2.0}):
        chunks, _ = await collect(client.inference.Generate(greedy(prompt, 1, **penalty)))
        assert chunks[0].token_ids == plain[0].token_ids, penalty


async def test_embeddings_do_not_wait_behind_generation(client: Client) -> None:
    long = client.inference.Generate(greedy("Tell me a story.", 300, logit_bias=NO_EOG))
    task = asyncio.ensure_future(collect(long))
    await asyncio.sleep(0.2)
    response = await client.inference.Embed(
        pb.EmbedRequest(model_id=M, inputs=[pb.EmbedInput(text="The cat sat on the mat.")])
    )
    assert len(response.embeddings[0].values) == 576
    assert not task.done(), "the embedding waited for the 300-token generation"
    _, final = await task
    assert final.usage.completion_tokens == 300


async def test_a_short_prompt_is_not_stuck_behind_a_long_one(client: Client) -> None:
    """Prompt chunks go to the request with the least prompt left: the short one answers first."""
    firsts: list[str] = []

    async def first_token(name: str, request: pb.GenerateRequest) -> None:
        async for message in client.inference.Generate(request):
            if message.WhichOneof("event") == "chunk":
                firsts.append(name)
                break

    long = asyncio.ensure_future(first_token("long", greedy("word " * 1800, 2)))
    await asyncio.sleep(0.05)
    short = asyncio.ensure_future(first_token("short", greedy("1, 2, 3,", 2)))
    await asyncio.gather(long, short)
    assert firsts == ["short", "long"]


async def test_a_prompt_without_kv_room_waits_instead_of_failing(tight: Client) -> None:
    """While it is still reading its prompt a request has sent nothing: it goes back to the
    queue until the running one ends, rather than failing."""
    older = tight.inference.Generate(greedy("1, 2, 3,", 240, logit_bias=NO_EOG))
    older_task = asyncio.ensure_future(collect(older))
    for _ in range(600):  # wait until the older one holds ~170 of the 256 cells
        await asyncio.sleep(0.02)
        engine = tight.core.manager._slots[M].engine
        if engine is not None and engine.stats().decode_tokens >= 160:
            break
    newer = greedy(" ".join(f"item {i}," for i in range(40)), 20, logit_bias=NO_EOG)
    chunks, final = await collect(tight.inference.Generate(newer))
    _, older_final = await older_task
    assert older_final.usage.completion_tokens == 240
    assert final.usage.completion_tokens == 20 and len(chunks) >= 1
    assert final.timings.queue_ms > 0


async def test_logprobs_score_every_generated_token_against_the_raw_logits(client: Client) -> None:
    request = greedy("1, 2, 3, 4,", 8, logprobs=True, top_logprobs=3)
    chunks, final = await collect(client.inference.Generate(request))
    scored = [(c, s) for c in chunks for s in c.logprobs]
    assert len(scored) == final.usage.completion_tokens == 8
    for chunk, s in scored:
        assert len(chunk.logprobs) == len(chunk.token_ids)
        assert s.token.logprob <= 0.0
        assert [t.logprob for t in s.top] == sorted((t.logprob for t in s.top), reverse=True)
        assert len(s.top) == 3
        # Greedy with no bias or penalty takes the model's most likely token.
        assert s.token.token_id == s.top[0].token_id
        assert s.token.logprob == pytest.approx(s.top[0].logprob)
    ids = [s.token.token_id for _, s in scored]
    assert ids == [t for c in chunks for t in c.token_ids]
    assert b"".join(s.token.piece for _, s in scored).decode() == text_of(chunks)
    plain, _ = await collect(client.inference.Generate(greedy("1, 2, 3, 4,", 8)))
    assert not any(c.logprobs for c in plain)


async def test_n_choices_share_the_kv_cache_and_are_clamped_to_fit(tight: Client) -> None:
    """Two choices of one prompt in a 256-token KV cache: each gets half of the room left."""
    request = greedy("1, 2, 3,", 32000, logit_bias=NO_EOG, n=2)
    chunks, final = await collect(tight.inference.Generate(request))
    room = (256 - final.usage.prompt_tokens) // 2
    assert [c.finish_reason for c in final.choices] == [pb.FINISH_REASON_LENGTH] * 2
    assert [c.completion_tokens for c in final.choices] == [room, room]
    assert sum(len(c.token_ids) for c in chunks) == 2 * room
