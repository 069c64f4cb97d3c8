"""A grammar with a trigger (tool_choice auto's calls after text) in the real engine: free
until the trigger appears, followed from its first byte on; a trigger the grammar cannot
continue leaves the answer free and the process up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from core.engine.llama_backend import LoadOptions, init_backend
from core.engine.llama_engine import LlamaEngine
from core.engine.sampling import Sampling
from core.engine.types import FinishReason, GenerationRequest, GenerationResult, TokenChunk

pytestmark = pytest.mark.asyncio(loop_scope="session")

COUNTING = "1, 2, 3, 4,"


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def engine(default_model_path: Path) -> AsyncIterator[LlamaEngine]:
    init_backend()
    options = LoadOptions(
        path=default_model_path, threads=2, n_gpu_layers=0, context_size=512, slots=2
    )
    loaded = await asyncio.to_thread(LlamaEngine.load, "lazy", options, 8)
    yield loaded
    await loaded.close()


async def run(engine: LlamaEngine, sampling: Sampling) -> tuple[str, GenerationResult]:
    tokens = await engine.tokenizer.tokenize(COUNTING, True, False)
    request = GenerationRequest(tuple(tokens), sampling, 12, time.perf_counter())
    text, result = "", None
    async for event in engine.generate(request):
        if isinstance(event, TokenChunk):
            text += event.text
        else:
            result = event
    assert result is not None
    return text, result


async def test_the_grammar_rules_only_from_its_trigger(engine: LlamaEngine) -> None:
    free, _ = await run(engine, Sampling(temperature=0.0))
    assert free.startswith(" 5, 6, 7"), free  # what the model writes unconstrained
    grammar = 'root ::= "6, banana."'
    lazy, result = await run(
        engine, Sampling(temperature=0.0, grammar=grammar, grammar_trigger="6,")
    )
    # Free up to the trigger, then the grammar's continuation, then the end it allows.
    assert lazy == " 5, 6, banana.", lazy
    assert result.finish_reason is FinishReason.STOP
    eager, _ = await run(engine, Sampling(temperature=0.0, grammar=grammar))
    assert eager == "6, banana."


async def test_a_trigger_that_never_appears_leaves_the_answer_free(engine: LlamaEngine) -> None:
    free, _ = await run(engine, Sampling(temperature=0.0))
    lazy, _ = await run(
        engine, Sampling(temperature=0.0, grammar='root ::= "x"', grammar_trigger="banana")
    )
    assert lazy == free


async def test_a_trigger_its_grammar_cannot_continue_is_not_fed_to_it(
    engine: LlamaEngine,
) -> None:
    # llama.cpp's own lazy grammar would feed " 5" to a grammar that wants "x" and abort.
    free, _ = await run(engine, Sampling(temperature=0.0))
    lazy, result = await run(
        engine, Sampling(temperature=0.0, grammar='root ::= "x"', grammar_trigger=" 5")
    )
    assert lazy == free
    assert result.finish_reason is FinishReason.LENGTH
