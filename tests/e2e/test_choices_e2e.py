"""n choices and session affinity through both processes with the official openai SDK."""

from __future__ import annotations

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from tests.e2e.conftest import MODEL

pytestmark = pytest.mark.e2e

QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Write one sentence about the sea."}
]


def _three_choices(own_client: openai.OpenAI) -> ChatCompletion:
    return own_client.chat.completions.create(
        model=MODEL, messages=QUESTION, n=3, temperature=1.0, seed=5, max_tokens=12
    )


def test_n_choices_have_their_own_texts(own_client: openai.OpenAI) -> None:
    reply = _three_choices(own_client)
    assert [choice.index for choice in reply.choices] == [0, 1, 2]
    texts = [choice.message.content for choice in reply.choices]
    assert all(texts) and len(set(texts)) == 3, texts
    assert {choice.finish_reason for choice in reply.choices} <= {"stop", "length"}
    assert reply.usage is not None
    assert 3 <= reply.usage.completion_tokens <= 3 * 12


def test_n_choices_stream_each_index_to_its_finish(own_client: openai.OpenAI) -> None:
    stream = own_client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        n=3,
        temperature=1.0,
        seed=5,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    texts: dict[int, str] = {}
    finishes: dict[int, list[str | None]] = {}
    for chunk in chunks[:-1]:
        (choice,) = chunk.choices
        texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
        finishes.setdefault(choice.index, []).append(choice.finish_reason)
    assert sorted(finishes) == [0, 1, 2]
    for reasons in finishes.values():
        assert reasons[-1] in ("stop", "length")
        assert all(reason is None for reason in reasons[:-1])
    whole = _three_choices(own_client)
    assert texts == {choice.index: choice.message.content for choice in whole.choices}
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None and whole.usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_session_header_keeps_the_conversation_cached(own_client: openai.OpenAI) -> None:
    session = {"x-session-affinity": "conv-1"}
    first_turn: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "My name is Ada. Remember it."}
    ]
    first = own_client.chat.completions.create(
        model=MODEL, messages=first_turn, max_tokens=16, temperature=0, extra_headers=session
    )
    second = own_client.chat.completions.create(
        model=MODEL,
        messages=[
            *first_turn,
            {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": "What is my name?"},
        ],
        max_tokens=8,
        temperature=0,
        extra_headers=session,
    )
    assert first.usage is not None and second.usage is not None
    details = second.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens is not None
    # The whole first turn's prompt is reused, not only the template's shared opening.
    assert details.cached_tokens >= first.usage.prompt_tokens > 0
    assert second.usage.prompt_tokens > details.cached_tokens
