"""The engine's KV bookkeeping on real models, below gRPC: sliding windows, broken streams."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from core.engine.llama_backend import LoadOptions, init_backend
from core.engine.llama_engine import LlamaEngine
from core.engine.sampling import Sampling
from core.engine.sequence import Job
from core.engine.types import FlashAttention, GenerationRequest, GenerationResult, TokenChunk

pytestmark = pytest.mark.asyncio(loop_scope="session")

SHIPS = [f"Ship {i} arrived at dock {i % 7} carrying {i * 3} crates of apples." for i in range(60)]
HARBOUR = "The following is the log of the harbour office. "
QUESTION = "\nQuestion: which dock did ship 12 arrive at? Answer:"


async def load(path: Path, **options: object) -> LlamaEngine:
    init_backend()
    opts = LoadOptions(path=path, threads=2, n_gpu_layers=0, **options)  # type: ignore[arg-type]
    return await asyncio.to_thread(LlamaEngine.load, path.stem, opts, 8)


async def greedy(engine: LlamaEngine, text: str, max_tokens: int) -> tuple[str, GenerationResult]:
    tokens = await engine.tokenizer.tokenize(text, True, False)
    request = GenerationRequest(
        tuple(tokens), Sampling(temperature=0.0), max_tokens, time.perf_counter()
    )
    out, result = "", None
    async for event in engine.generate(request):
        if isinstance(event, TokenChunk):
            out += event.text
        else:
            result = event
    assert result is not None
    return out, result


GEMMA_OPTIONS = {"context_size": 2048, "slots": 2, "kv_tokens": 4096, "batch_size": 512}


@pytest_asyncio.fixture(loop_scope="session")
async def gemma(extra_model_path: Path) -> AsyncIterator[LlamaEngine]:
    """Gemma 3 keeps only the last 512 positions in its sliding-window layers."""
    engine = await load(extra_model_path, **GEMMA_OPTIONS)
    yield engine
    await engine.close()


async def test_a_prefix_whose_sliding_window_is_gone_is_evaluated_again(
    gemma: LlamaEngine, extra_model_path: Path
) -> None:
    """A's window cells are reused by later prompts once they fall out of its window; a request
    sharing A's first 500 tokens must not continue from their full-attention cells alone."""
    recipes = "Recipes. " + " ".join(
        f"Step {i}: stir {i} times, add {i % 5} spoons." for i in range(50)
    )
    trains = "Trains. " + " ".join(
        f"Train {i} leaves platform {i % 9} at {i % 24}:{i % 60:02d} for town {i * 7}."
        for i in range(95)
    )
    for text in (recipes, HARBOUR + " ".join(SHIPS), trains):
        await greedy(gemma, text, 4)
    question = HARBOUR + " ".join(SHIPS[:30]) + QUESTION
    warm, _ = await greedy(gemma, question, 16)
    fresh = await load(extra_model_path, **GEMMA_OPTIONS)
    try:
        cold, _ = await greedy(fresh, question, 16)
    finally:
        await fresh.close()
    assert warm == cold


async def test_a_continued_conversation_keeps_its_window(gemma: LlamaEngine) -> None:
    first = HARBOUR + " ".join(SHIPS)
    reply, _ = await greedy(gemma, first, 4)
    _, result = await greedy(gemma, first + reply + QUESTION, 4)
    assert result.cached_tokens >= result.prompt_tokens - 20


async def test_a_stream_that_breaks_cancels_only_its_own_request(default_model_path: Path) -> None:
    engine = await load(default_model_path, context_size=512, slots=4)
    try:
        good = asyncio.ensure_future(greedy(engine, "1, 2, 3, 4,", 24))
        events: list[object] = []

        def broken(event: object) -> None:
            events.append(event)
            raise RuntimeError("this stream is gone")

        tokens = await engine.tokenizer.tokenize("a, b, c,", True, False)
        request = GenerationRequest(
            tuple(tokens), Sampling(temperature=0.0), 200, time.perf_counter()
        )
        job = Job(request, emit=broken, fail=broken)
        engine._steps.submit(job)
        text, result = await good
        assert text.startswith(" 5, 6") and result.completion_tokens == 24
        # Dropped after its first event: the only other one is its (cancelled) end.
        assert job.cancelled.is_set() and isinstance(events[0], TokenChunk)
        assert [type(e) for e in events[1:]] == [GenerationResult]
        after, _ = await greedy(engine, "x, y,", 3)  # the step thread still serves
        assert after
        for _ in range(200):
            if not engine.busy:
                break
            await asyncio.sleep(0.01)
        assert not engine.busy
    finally:
        await engine.close()


async def test_a_whole_sequence_keeps_its_window_even_after_others_reused_cells(
    gemma: LlamaEngine,
) -> None:
    """A's cells older than its window may be taken by later prompts; what remains is exactly
    what continuing A needs, so A's next turn reuses all of it."""
    vocab = gemma.tokenizer
    x = (await vocab.tokenize("Alpha beta gamma delta. " * 80, True, False))[:300]
    a = (await vocab.tokenize("The quick brown fox jumps over the lazy dog. " * 80, True, False))[
        :700
    ]
    lorem = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 60
    c = (await vocab.tokenize(lorem, True, False))[:600]
    for prompt in (x, a, c):
        await greedy_ids(gemma, prompt, 1)
    more = await vocab.tokenize(" And then the fox slept.", False, False)
    result = await greedy_ids(gemma, [*a, *more], 1)
    assert result.cached_tokens == len(a)


async def greedy_ids(engine: LlamaEngine, tokens: list[int], max_tokens: int) -> GenerationResult:
    request = GenerationRequest(
        tuple(tokens), Sampling(temperature=0.0), max_tokens, time.perf_counter()
    )
    events = [event async for event in engine.generate(request)]
    assert isinstance(events[-1], GenerationResult)
    return events[-1]


async def settled(engine: LlamaEngine) -> None:
    """Wait until the idle step thread has moved every idle cache it can to host RAM."""
    for _ in range(500):
        if not engine._steps._table.has_parkable():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("idle caches never moved")


async def test_idle_caches_move_to_host_ram_and_conversations_resume(
    default_model_path: Path,
) -> None:
    """Idle caches pin cells across the unified pool and slow every query's attention, prompt and
    generated tokens alike: they move to host RAM, and a returning conversation resumes from
    there. Without a host cache they stay, as does a cache too big for it (nothing would keep
    them)."""
    engine = await load(
        default_model_path, context_size=1024, slots=4, prompt_cache_bytes=64 * 2**20
    )
    vocab = engine.tokenizer
    chats = [await vocab.tokenize(" ".join(SHIPS[i : i + 8]), True, False) for i in (0, 8, 16)]
    try:
        table = engine._steps._table
        for n, chat in enumerate(chats, start=1):  # ~100 tokens each
            await greedy_ids(engine, chat, 4)
            await settled(engine)
            assert [s.tokens for s in table.slots if s.tokens] == []
            assert len(table.cache) == n
        more = await vocab.tokenize(" Then what?", False, False)
        result = await greedy_ids(engine, [*chats[0], *more], 1)
        assert result.cached_tokens >= len(chats[0])
    finally:
        await engine.close()
    for cache_bytes in (0, 2**20):  # none, or smaller than one ~100-token state (~2.5 MB)
        engine = await load(
            default_model_path, context_size=1024, slots=4, prompt_cache_bytes=cache_bytes
        )
        try:
            for chat in chats[:2]:
                await greedy_ids(engine, chat, 4)
            await settled(engine)
            held = sorted(len(s.tokens) for s in engine._steps._table.slots if s.tokens)
            assert held == sorted(len(chat) + 3 for chat in chats[:2])
        finally:
            await engine.close()
    # Room for one: the second stays in the KV pool rather than push the first out.
    engine = await load(
        default_model_path, context_size=1024, slots=4, prompt_cache_bytes=4 * 2**20
    )
    try:
        for chat in chats[:2]:
            await greedy_ids(engine, chat, 4)
        await settled(engine)
        table = engine._steps._table
        assert [len(s.tokens) for s in table.slots if s.tokens] == [len(chats[1]) + 3]
        assert len(table.cache) == 1
        result = await greedy_ids(engine, [*chats[0], *more], 1)
        assert result.cached_tokens >= len(chats[0])
    finally:
        await engine.close()


async def test_a_failing_move_to_host_ram_costs_no_request(
    default_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Moving caches out only saves time: when it fails, requests still run and slots free."""
    engine = await load(
        default_model_path, context_size=1024, slots=2, prompt_cache_bytes=64 * 2**20
    )
    vocab = engine.tokenizer

    def broken(*_args: object) -> bytes:
        raise RuntimeError("no host memory")

    monkeypatch.setattr(engine._steps._table._ctx, "save_seq", broken)
    try:
        for i in range(4):  # more requests than slots, one after another
            chat = await vocab.tokenize(" ".join(SHIPS[8 * i : 8 * i + 8]), True, False)
            assert (await greedy_ids(engine, chat, 3)).completion_tokens == 3
        assert not any(s.busy for s in engine._steps._table.slots)
    finally:
        await engine.close()


async def test_a_cache_gone_idle_beside_a_running_request_moves_out(
    default_model_path: Path,
) -> None:
    """A request that ends while another generates: its cache moves out at the next steps."""
    engine = await load(
        default_model_path, context_size=1024, slots=4, prompt_cache_bytes=64 * 2**20
    )
    vocab = engine.tokenizer
    try:
        table = engine._steps._table
        quick = await vocab.tokenize(" ".join(SHIPS[:8]), True, False)
        slow = await vocab.tokenize("Count: one, two, three,", True, False)
        running = asyncio.create_task(greedy_ids(engine, slow, 200))  # seconds of steps
        await greedy_ids(engine, quick, 2)
        for _ in range(100):
            if len(table.cache) == 1:
                break
            await asyncio.sleep(0.01)
        assert not running.done() and len(table.cache) == 1  # `quick`'s, while `slow` runs
        assert [len(s.tokens) for s in table.slots if s.tokens] == [
            len(s.tokens) for s in table.slots if s.busy
        ]
        assert (await running).completion_tokens == 200
    finally:
        await engine.close()


async def test_plain_greedy_picks_what_the_greedy_chain_picks(default_model_path: Path) -> None:
    """The argmax shortcut and the C chain (made to run by a zero logit bias, which changes no
    logit) generate the same tokens, each request from a cold slot."""
    engine = await load(default_model_path, context_size=512, slots=2)
    try:
        prompt = tuple(await engine.tokenizer.tokenize("The three primary colors are", True, False))
        outputs = []
        for bias in ({}, {0: 0.0}):
            request = GenerationRequest(
                prompt, Sampling(temperature=0.0, logit_bias=bias), 24, time.perf_counter()
            )
            engine._steps._table.reset()  # a cold prompt both times: the same batch shapes
            ids = [
                t
                for e in [e async for e in engine.generate(request)]
                if isinstance(e, TokenChunk)
                for t in e.token_ids
            ]
            outputs.append(ids)
        assert len(outputs[0]) == 24
        assert outputs[0] == outputs[1]
    finally:
        await engine.close()


@pytest.mark.parametrize(
    ("setting", "kernel"),
    [
        (FlashAttention.ON, "enabled"),
        (FlashAttention.OFF, "disabled"),
        (FlashAttention.AUTO, "disabled"),
    ],
)
async def test_flash_attention_setting_reaches_the_context(
    default_model_path: Path, caplog: pytest.LogCaptureFixture, setting: FlashAttention, kernel: str
) -> None:
    """llama.cpp reports the kernel it built the context with; either one generates."""
    caplog.set_level(logging.DEBUG, logger="llama.cpp")
    engine = await load(default_model_path, context_size=512, slots=2, flash_attn=setting)
    try:
        text, result = await greedy(engine, "Monday, Tuesday, Wednesday,", 8)
    finally:
        await engine.close()
    reported = [r.getMessage() for r in caplog.records if "flash_attn" in r.getMessage()]
    assert reported and all(re.search(rf"flash_attn\s+= {kernel}$", m) for m in reported), reported
    assert result.completion_tokens == 8
    assert "Thursday" in text


@pytest.mark.parametrize("preserved", [True, False])
async def test_a_preserved_control_token_shows_its_text(
    default_model_path: Path, preserved: bool
) -> None:
    # Tool-call markers may be control tokens (Mistral's [TOOL_CALLS]): the grammar matches their
    # text, and the parser must see it; other control tokens still show as nothing.
    engine = await load(default_model_path, context_size=512)
    try:
        [start] = await engine.tokenizer.tokenize("<|im_start|>", False, True)
        prompt = tuple(await engine.tokenizer.tokenize("Hi", True, False))
        # The bias makes the model pick the control token, not the same text in plain tokens.
        sampling = Sampling(
            temperature=0.0, grammar='root ::= "<|im_start|>" "x"', logit_bias={start: 100.0}
        )
        keep = frozenset({start}) if preserved else frozenset()
        request = GenerationRequest(prompt, sampling, 8, time.perf_counter(), preserved=keep)
        text = "".join(
            [e.text async for e in engine.generate(request) if isinstance(e, TokenChunk)]
        )
        assert text == ("<|im_start|>x" if preserved else "x")
    finally:
        await engine.close()
