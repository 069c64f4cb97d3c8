"""Logprobs: request fields, the pure answer shapes, and both endpoints on the fake core."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient
from minerva.v1 import inference_pb2

from rest_bridge import logprobs, protocol, translate
from tests.bridge.conftest import (
    MODEL_ID,
    FakeCore,
    chunk,
    final,
    rpc_error,
    sampled,
    sse_events,
)

IDS = translate.ResponseIds(id="x-1", created=5, model="m")
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": "m", "prompt": "Once"}
CHAT_URL = "/v1/chat/completions"
COMPLETION_URL = "/v1/completions"
# Logprobs exact in float32, so the JSON the bridge writes compares equal.
HI = sampled("Hi", -0.25, ("Hi", -0.25), ("Hey", -1.5))
THERE = sampled(" there", -0.5, ("!", -0.125), (" there", -0.5))


@pytest.mark.parametrize(
    ("fields", "sent"),
    [
        ({}, None),
        ({"logprobs": None, "top_logprobs": None}, None),
        ({"logprobs": False}, None),
        ({"logprobs": False, "top_logprobs": 0}, None),
        ({"logprobs": True}, (True, 0)),
        ({"logprobs": True, "top_logprobs": 0}, (True, 0)),
        ({"logprobs": True, "top_logprobs": 3}, (True, 3)),
        ({"logprobs": True, "top_logprobs": 20.0}, (True, 20)),
    ],
)
def test_chat_logprobs_fields(fields: dict[str, Any], sent: tuple[bool, int] | None) -> None:
    request, _ = protocol.chat_request({**CHAT, **fields})
    assert_sent(request.sampling, sent)


@pytest.mark.parametrize(
    ("fields", "sent"),
    [
        ({}, None),
        ({"logprobs": None}, None),
        ({"logprobs": False}, None),
        ({"logprobs": 0}, (True, 0)),
        ({"logprobs": 2}, (True, 2)),
        ({"logprobs": 5, "top_logprobs": 0}, (True, 5)),
    ],
)
def test_completion_logprobs_is_the_rival_count(
    fields: dict[str, Any], sent: tuple[bool, int] | None
) -> None:
    request, _ = protocol.completion_request({**COMPLETION, **fields})
    assert_sent(request.sampling, sent)


def assert_sent(sampling: inference_pb2.SamplingParams, sent: tuple[bool, int] | None) -> None:
    """Unasked logprobs stay unset, so the core's request is what it was before them."""
    if sent is None:
        assert not sampling.HasField("logprobs")
        assert not sampling.HasField("top_logprobs")
    else:
        assert (sampling.logprobs, sampling.top_logprobs) == sent


def chat_entry(text: str, value: float, top: list[dict[str, Any]]) -> dict[str, Any]:
    return {"token": text, "logprob": value, "bytes": list(text.encode()), "top_logprobs": top}


def bare(text: str, value: float) -> dict[str, Any]:
    return {"token": text, "logprob": value, "bytes": list(text.encode())}


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([], {"content": []}),
        ([sampled("a", -2.0)], {"content": [chat_entry("a", -2.0, [])]}),
        (
            [HI, THERE],
            {
                "content": [
                    chat_entry("Hi", -0.25, [bare("Hi", -0.25), bare("Hey", -1.5)]),
                    chat_entry(" there", -0.5, [bare("!", -0.125), bare(" there", -0.5)]),
                ]
            },
        ),
    ],
)
def test_chat_shape(items: list[inference_pb2.SampledLogprob], expected: dict[str, Any]) -> None:
    assert logprobs.chat(items) == expected


def test_chat_bytes_are_the_piece_not_the_replacement_text() -> None:
    """Half a character shows as U+FFFD; its bytes are the token's own."""
    half = inference_pb2.SampledLogprob(
        token=inference_pb2.TokenLogprob(text="\ufffd", piece=b"\xe2\x82", logprob=-1.0)
    )
    (entry,) = logprobs.chat([half])["content"]
    assert (entry["token"], entry["bytes"]) == ("\ufffd", [0xE2, 0x82])


@pytest.mark.parametrize(
    ("items", "offset", "expected"),
    [
        ([], 0, {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}),
        (
            [HI, THERE],
            0,
            {
                "tokens": ["Hi", " there"],
                "token_logprobs": [-0.25, -0.5],
                "top_logprobs": [{"Hi": -0.25, "Hey": -1.5}, {"!": -0.125, " there": -0.5}],
                "text_offset": [0, 2],
            },
        ),
        (
            # logprobs=0: no rivals, but the sampled token is always in its own map.
            [sampled("ab", -1.0), sampled("c", -2.0)],
            7,
            {
                "tokens": ["ab", "c"],
                "token_logprobs": [-1.0, -2.0],
                "top_logprobs": [{"ab": -1.0}, {"c": -2.0}],
                "text_offset": [7, 9],
            },
        ),
        (
            # A sampled token outside the rivals joins them: up to logprobs + 1 entries.
            [sampled("x", -3.0, ("y", -0.25))],
            0,
            {
                "tokens": ["x"],
                "token_logprobs": [-3.0],
                "top_logprobs": [{"y": -0.25, "x": -3.0}],
                "text_offset": [0],
            },
        ),
    ],
)
def test_completion_shape(
    items: list[inference_pb2.SampledLogprob], offset: int, expected: dict[str, Any]
) -> None:
    assert logprobs.completion(items, offset) == expected
    assert logprobs.text_length(items) == sum(len(text) for text in expected["tokens"])


def test_collect_keeps_each_choices_tokens_in_order() -> None:
    events = [
        inference_pb2.ChatResponse(chunk=chunk("Hi", 1, logprobs=[HI])),
        inference_pb2.ChatResponse(chunk=chunk("x", 9, index=1, logprobs=[sampled("x", -1.0)])),
        inference_pb2.ChatResponse(chunk=chunk(" there", 2, logprobs=[THERE])),
        inference_pb2.ChatResponse(chunk=chunk("!")),  # a flushed tail: text, no tokens
        inference_pb2.ChatResponse(final=final()),
    ]
    picked = logprobs.collect(events)
    assert {index: [s.token.text for s in items] for index, items in picked.items()} == {
        0: ["Hi", " there"],
        1: ["x"],
    }


def test_whole_answers_show_logprobs_only_when_asked() -> None:
    ends = final(choices=[inference_pb2.FINISH_REASON_STOP] * 2)
    texts = {0: "Hi", 1: ""}
    picked = {0: [HI]}
    chat = translate.chat_completion(IDS, texts, ends, picked)["choices"]
    assert [c["logprobs"] for c in chat] == [logprobs.chat([HI]), {"content": []}]
    text = translate.completion(IDS, texts, ends, picked)["choices"]
    assert [c["logprobs"]["tokens"] for c in text] == [["Hi"], []]
    unasked = translate.chat_completion(IDS, texts, ends)["choices"]
    assert [c["logprobs"] for c in unasked] == [None, None]


async def test_chat_logprobs_non_streaming(bridge: TestClient, core: FakeCore) -> None:
    core.inference.script = [chunk("Hi", 1, logprobs=[HI]), chunk(" there", 2, logprobs=[THERE])]
    core.inference.script.append(final(completion=2))
    response = await bridge.post(CHAT_URL, json={**CHAT, "logprobs": True, "top_logprobs": 2})
    assert response.status == 200
    (choice,) = (await response.json())["choices"]
    assert choice["message"]["content"] == "Hi there"
    assert choice["logprobs"] == logprobs.chat([HI, THERE])
    sent = core.inference.requests[0].sampling
    assert (sent.logprobs, sent.top_logprobs) == (True, 2)


async def test_chat_stream_chunks_carry_their_own_tokens(
    bridge: TestClient, core: FakeCore
) -> None:
    held = sampled("\ufffd", -1.0)  # half a character: no text yet
    core.inference.script = [
        chunk("Hi", 1, logprobs=[HI]),
        chunk("", 2, logprobs=[held]),
        chunk("é", 3, logprobs=[sampled("\ufffd", -2.0)]),
        chunk("!"),  # a flushed tail: text, no tokens
        final(completion=3),
    ]
    response = await bridge.post(CHAT_URL, json={**CHAT, "logprobs": True, "stream": True})
    events = sse_events(await response.text())
    choices = [event["choices"][0] for event in events[:-1]]
    assert [(c["delta"], c["logprobs"]) for c in choices] == [
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Hi"}, logprobs.chat([HI])),
        ({"content": ""}, logprobs.chat([held])),
        ({"content": "é"}, logprobs.chat([sampled("\ufffd", -2.0)])),
        ({"content": "!"}, {"content": []}),
        ({}, None),
    ]


async def test_chat_n_choices_each_get_their_own_logprobs(
    bridge: TestClient, core: FakeCore
) -> None:
    core.inference.script = [
        chunk("Hi", 1, logprobs=[HI]),
        chunk("x", 9, index=1, logprobs=[sampled("x", -1.0)]),
        chunk(" there", 2, logprobs=[THERE]),
        final(choices=[inference_pb2.FINISH_REASON_STOP] * 2),
    ]
    response = await bridge.post(CHAT_URL, json={**CHAT, "n": 2, "logprobs": True})
    choices = (await response.json())["choices"]
    assert [[e["token"] for e in c["logprobs"]["content"]] for c in choices] == [
        ["Hi", " there"],
        ["x"],
    ]


async def test_completion_logprobs_non_streaming(bridge: TestClient, core: FakeCore) -> None:
    core.inference.script = [chunk("Hi", 1, logprobs=[HI]), chunk(" there", 2, logprobs=[THERE])]
    core.inference.script.append(final(completion=2))
    response = await bridge.post(COMPLETION_URL, json={**COMPLETION, "logprobs": 2})
    (choice,) = (await response.json())["choices"]
    assert choice["text"] == "Hi there"
    assert choice["logprobs"] == logprobs.completion([HI, THERE])
    assert choice["logprobs"]["text_offset"] == [0, 2]


async def test_completion_stream_offsets_continue_per_choice(
    bridge: TestClient, core: FakeCore
) -> None:
    core.inference.script = [
        chunk("Hi", 1, logprobs=[HI]),
        chunk("abc", 7, index=1, logprobs=[sampled("abc", -1.0)]),
        chunk(" there", 2, logprobs=[THERE]),
        chunk("d", 8, index=1, logprobs=[sampled("d", -2.0)]),
        final(choices=[inference_pb2.FINISH_REASON_STOP] * 2),
    ]
    response = await bridge.post(
        COMPLETION_URL, json={**COMPLETION, "n": 2, "logprobs": 0, "stream": True}
    )
    events = sse_events(await response.text())
    shapes = [
        (c["index"], c["text"], c["logprobs"] and c["logprobs"]["text_offset"])
        for c in (event["choices"][0] for event in events[:-1])
    ]
    assert shapes == [
        (0, "Hi", [0]),
        (1, "abc", [0]),
        (0, " there", [2]),
        (1, "d", [3]),
        (0, "", None),
        (1, "", None),
    ]


@pytest.mark.parametrize(
    ("url", "body", "param"),
    [
        (CHAT_URL, {**CHAT, "logprobs": True, "top_logprobs": 20}, "top_logprobs"),
        (COMPLETION_URL, {**COMPLETION, "logprobs": 5}, "logprobs"),
    ],
)
async def test_core_refusal_names_each_endpoints_param(
    bridge: TestClient, core: FakeCore, url: str, body: dict[str, Any], param: str
) -> None:
    core.inference.script = [
        rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "too many", "sampling.top_logprobs")
    ]
    response = await bridge.post(url, json=body)
    assert response.status == 400
    assert (await response.json())["error"]["param"] == param


async def test_top_logprobs_without_logprobs_never_reaches_the_core(
    bridge: TestClient, core: FakeCore
) -> None:
    response = await bridge.post(CHAT_URL, json={**CHAT, "model": MODEL_ID, "top_logprobs": 3})
    assert response.status == 400
    assert (await response.json())["error"]["param"] == "top_logprobs"
    assert core.inference.requests == []
