"""Logprobs through both processes with the official openai SDK: chat and legacy completions."""

from __future__ import annotations

import openai
import pytest

from tests.e2e.conftest import MODEL

pytestmark = pytest.mark.e2e


def test_chat_logprobs_cover_every_token_with_sorted_rivals(own_client: openai.OpenAI) -> None:
    reply = own_client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name three colors."}],
        logprobs=True,
        top_logprobs=3,
        temperature=0,
        max_tokens=8,
    )
    choice = reply.choices[0]
    assert reply.usage is not None and choice.logprobs is not None
    content = choice.logprobs.content
    assert content is not None
    assert len(content) == reply.usage.completion_tokens > 0
    for entry in content:
        assert entry.logprob <= 0
        rivals = [top.logprob for top in entry.top_logprobs]
        assert len(rivals) == 3
        assert rivals == sorted(rivals, reverse=True)
        # Greedy: the chosen token is the most likely one.
        assert entry.token == entry.top_logprobs[0].token
        assert entry.logprob == pytest.approx(rivals[0])


def test_completion_logprobs_are_parallel_lists_of_the_text(own_client: openai.OpenAI) -> None:
    reply = own_client.completions.create(
        model=MODEL, prompt="The capital of France is", logprobs=2, temperature=0, max_tokens=8
    )
    choice = reply.choices[0]
    assert reply.usage is not None and choice.logprobs is not None
    found = choice.logprobs
    assert found.tokens is not None and found.token_logprobs is not None
    assert found.top_logprobs is not None and found.text_offset is not None
    count = reply.usage.completion_tokens
    assert count > 0
    assert len(found.tokens) == len(found.token_logprobs) == count
    assert len(found.top_logprobs) == len(found.text_offset) == count
    assert "".join(found.tokens) == choice.text
    assert found.text_offset == [len("".join(found.tokens[:i])) for i in range(count)]
    for text, chosen, rivals in zip(
        found.tokens, found.token_logprobs, found.top_logprobs, strict=True
    ):
        # Greedy: the chosen token is one of the two most likely, and the likeliest.
        assert len(rivals) == 2 and rivals[text] == chosen == max(rivals.values())


def test_streamed_chat_logprobs_come_with_each_piece_of_text(own_client: openai.OpenAI) -> None:
    stream = own_client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name three colors."}],
        logprobs=True,
        top_logprobs=2,
        temperature=0,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0
    pieces = [
        chunk.choices[0] for chunk in chunks if chunk.choices and chunk.choices[0].delta.content
    ]
    assert pieces
    tokens = 0
    for piece in pieces:
        assert piece.logprobs is not None and piece.logprobs.content, piece
        entries = piece.logprobs.content
        assert "".join(entry.token for entry in entries) == piece.delta.content
        for entry in entries:
            rivals = [top.logprob for top in entry.top_logprobs]
            assert len(rivals) == 2 and rivals == sorted(rivals, reverse=True)
            assert entry.token == entry.top_logprobs[0].token  # greedy
        tokens += len(entries)
    assert tokens == usage.completion_tokens
