"""Pure tests of n choices and session affinity: requests, whole answers and stream chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from minerva.v1 import inference_pb2
from multidict import CIMultiDict

from rest_bridge import protocol, translate
from rest_bridge.chat import ChatChunks
from rest_bridge.completions import CompletionChunks
from rest_bridge.errors import BadRequest
from rest_bridge.generation import StreamChunks, stream_chunks
from tests.bridge.conftest import chunk, final, interleaved

IDS = translate.ResponseIds(id="x-1", created=5, model="m")
STOP = inference_pb2.FINISH_REASON_STOP
LENGTH = inference_pb2.FINISH_REASON_LENGTH
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": "m", "prompt": "Once"}
ROLE = {"role": "assistant", "content": ""}


@pytest.mark.parametrize("body", [CHAT, COMPLETION])
@pytest.mark.parametrize(("n", "sent"), [(None, None), (1, 1), (3, 3), (16, 16), (17, 17)])
def test_n_becomes_sampling_n(body: dict[str, Any], n: int | None, sent: int | None) -> None:
    """The bridge checks type and n >= 1; the core checks the upper bound (its slots)."""
    build = protocol.chat_request if "messages" in body else protocol.completion_request
    request, _ = build({**body, "n": n})
    assert request.sampling.HasField("n") is (sent is not None)
    assert (request.sampling.n if sent else None) == sent


@pytest.mark.parametrize(
    ("headers", "session"),
    [
        ({}, ""),
        ({"x-session-affinity": "conv-1"}, "conv-1"),
        ({"X-Session-Affinity": "conv-2"}, "conv-2"),
        ({"x-session-affinity": "é" * 128}, "é" * 128),
        ({"x-session-affinity": ""}, ""),
        ({"user-agent": "opencode", "x-session-affinity": "s"}, "s"),
    ],
)
def test_session_header_becomes_session_id(headers: dict[str, str], session: str) -> None:
    got = protocol.session_id(CIMultiDict(headers))
    assert got == session
    assert protocol.chat_request(CHAT, got)[0].session_id == session
    assert protocol.completion_request(COMPLETION, got)[0].session_id == session


@pytest.mark.parametrize(("value", "fragment"), [("s" * 129, "at most 128"), ("a\udcff", "UTF-8")])
def test_bad_session_header_is_400_naming_the_header(value: str, fragment: str) -> None:
    with pytest.raises(BadRequest) as caught:
        protocol.session_id(CIMultiDict({"X-Session-Affinity": value}))
    assert (caught.value.status, caught.value.param) == (400, "x-session-affinity")
    assert fragment in caught.value.message


def test_user_field_is_not_a_session() -> None:
    request, _ = protocol.chat_request({**CHAT, "user": "u-1"})
    assert request.session_id == ""


@pytest.mark.parametrize(
    ("end", "expected"),
    [
        (final(LENGTH), [(0, LENGTH)]),  # a core from before n: the top-level reason
        (final(choices=[LENGTH]), [(0, LENGTH)]),
        (final(choices=[STOP, LENGTH, STOP]), [(0, STOP), (1, LENGTH), (2, STOP)]),
    ],
)
def test_choice_ends(
    end: inference_pb2.GenerationFinal, expected: list[tuple[int, inference_pb2.FinishReason]]
) -> None:
    assert [(e.index, e.finish_reason) for e in translate.choice_ends(end)] == expected


def _events(script: list[Any]) -> list[inference_pb2.ChatResponse]:
    return [
        inference_pb2.ChatResponse(chunk=item)
        if isinstance(item, inference_pb2.GenerationChunk)
        else inference_pb2.ChatResponse(final=item)
        for item in script
    ]


THREE = [*interleaved(["a", "d"], ["b"], ["c", "e"]), final(choices=[STOP, LENGTH, STOP])]


def test_collect_groups_text_by_choice() -> None:
    texts, end = translate.collect(_events(THREE))
    assert texts == {0: "ad", 1: "b", 2: "ce"}
    assert len(end.choices) == 3


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ([chunk("Hi", 1), final(LENGTH)], [(0, "Hi", "length")]),
        ([chunk("Hi", 1), final(choices=[STOP])], [(0, "Hi", "stop")]),
        (THREE, [(0, "ad", "stop"), (1, "b", "length"), (2, "ce", "stop")]),
        # A choice that produced no text (max_tokens hit on a held-back token) still appears.
        (
            [chunk("x", 1), final(choices=[STOP, LENGTH])],
            [(0, "x", "stop"), (1, "", "length")],
        ),
    ],
)
def test_whole_answers_have_one_choice_per_index(
    script: list[Any], expected: list[tuple[int, str, str]]
) -> None:
    texts, end = translate.collect(_events(script))
    chat = translate.chat_completion(IDS, texts, end)["choices"]
    text = translate.completion(IDS, texts, end)["choices"]
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in chat] == expected
    assert [(c["index"], c["text"], c["finish_reason"]) for c in text] == expected
    assert all(c["message"]["role"] == "assistant" for c in chat)
    assert [list(c) for c in text] == [["index", "text", "logprobs", "finish_reason"]] * len(text)


async def _played(script: list[Any]) -> AsyncIterator[inference_pb2.ChatResponse]:
    for event in _events(script):
        yield event


async def _stream(builder: StreamChunks, script: list[Any]) -> list[dict[str, Any]]:
    return [c async for c in stream_chunks(_played(script), builder, "core", "prompt")]


def _shape(chunk: dict[str, Any]) -> tuple[Any, ...]:
    """(index, delta or text, finish_reason) of a choice chunk; ('usage', total) of the last."""
    if not chunk["choices"]:
        return ("usage", chunk["usage"]["completion_tokens"])
    (choice,) = chunk["choices"]
    return (choice["index"], choice.get("delta", choice.get("text")), choice["finish_reason"])


CHAT_STREAMS = [
    (
        [chunk("Hi", 1), final(LENGTH, completion=1)],
        [(0, ROLE, None), (0, {"content": "Hi"}, None), (0, {}, "length")],
    ),
    (
        THREE,
        [
            (0, ROLE, None),
            (0, {"content": "a"}, None),
            (1, ROLE, None),
            (1, {"content": "b"}, None),
            (2, ROLE, None),
            (2, {"content": "c"}, None),
            (0, {"content": "d"}, None),
            (2, {"content": "e"}, None),
            (0, {}, "stop"),
            (1, {}, "length"),
            (2, {}, "stop"),
        ],
    ),
    (
        # Choice 1 sent no text: it still opens (once) before the finish chunks.
        [chunk("", 1), chunk("x", 2), final(choices=[STOP, LENGTH])],
        [
            (0, ROLE, None),
            (0, {"content": "x"}, None),
            (1, ROLE, None),
            (0, {}, "stop"),
            (1, {}, "length"),
        ],
    ),
]


@pytest.mark.parametrize(("script", "expected"), CHAT_STREAMS)
async def test_chat_stream_opens_each_choice_once_and_finishes_each(
    script: list[Any], expected: list[tuple[Any, ...]]
) -> None:
    chunks = await _stream(ChatChunks(IDS, include_usage=False), script)
    assert [_shape(c) for c in chunks] == expected
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ([chunk("Hi", 1), final(LENGTH)], [(0, "Hi", None), (0, "", "length"), ("usage", 3)]),
        (
            [*interleaved(["a"], ["b", "c"]), final(completion=3, choices=[STOP, LENGTH])],
            [
                (0, "a", None),
                (1, "b", None),
                (1, "c", None),
                (0, "", "stop"),
                (1, "", "length"),
                ("usage", 3),
            ],
        ),
    ],
)
async def test_completion_stream_finishes_each_choice_then_usage(
    script: list[Any], expected: list[tuple[Any, ...]]
) -> None:
    chunks = await _stream(CompletionChunks(IDS, include_usage=True), script)
    assert [_shape(c) for c in chunks] == expected
    assert [c["usage"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert {c["object"] for c in chunks} == {"text_completion"}
