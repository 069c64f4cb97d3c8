"""POST /v1/completions through aiohttp's test client on the fake core."""

from __future__ import annotations

import grpc
from aiohttp.test_utils import TestClient
from minerva.v1 import inference_pb2

from tests.bridge.conftest import (
    FINGERPRINT,
    MODEL_ID,
    FakeCore,
    chunk,
    final,
    interleaved,
    rpc_error,
    sse_events,
)

URL = "/v1/completions"


async def test_non_streaming_completion(bridge: TestClient, core: FakeCore) -> None:
    response = await bridge.post(
        URL, json={"model": MODEL_ID, "prompt": "Once", "max_tokens": 3, "seed": 7, "stop": "\n"}
    )
    assert response.status == 200
    data = await response.json()
    assert data["object"] == "text_completion"
    assert data["id"].startswith("cmpl-")
    assert data["choices"][0]["text"] == "Hello there"
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"]["total_tokens"] == 10
    assert data["system_fingerprint"] == FINGERPRINT
    sent = core.inference.requests[0]
    assert isinstance(sent, inference_pb2.GenerateRequest)
    assert (sent.text, sent.sampling.seed, list(sent.sampling.stop)) == ("Once", 7, ["\n"])


async def test_token_id_prompt(bridge: TestClient, core: FakeCore) -> None:
    response = await bridge.post(URL, json={"model": MODEL_ID, "prompt": [1, 2, 3]})
    assert response.status == 200
    assert list(core.inference.requests[0].token_ids.ids) == [1, 2, 3]


async def test_out_of_vocabulary_token_is_400_on_prompt(bridge: TestClient, core: FakeCore) -> None:
    core.inference.script = [
        rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "token id 999999 outside vocab", "token_ids")
    ]
    response = await bridge.post(URL, json={"model": MODEL_ID, "prompt": [999999]})
    assert response.status == 400
    assert (await response.json())["error"]["param"] == "prompt"


async def test_streaming_completion(bridge: TestClient, core: FakeCore) -> None:
    core.inference.script = [
        chunk("A", 1),
        chunk("B", 2),
        final(inference_pb2.FINISH_REASON_LENGTH, completion=2),
    ]
    response = await bridge.post(
        URL,
        json={
            "model": MODEL_ID,
            "prompt": "x",
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    events = sse_events(await response.text())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert [c["choices"][0]["text"] for c in chunks[:-1]] == ["A", "B", ""]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, None, "length"]
    assert [c["usage"] for c in chunks[:-1]] == [None, None, None]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 2


async def test_streaming_completion_without_usage(bridge: TestClient, core: FakeCore) -> None:
    response = await bridge.post(URL, json={"model": MODEL_ID, "prompt": "x", "stream": True})
    events = sse_events(await response.text())
    assert [e["choices"][0]["text"] for e in events[:-1]] == ["Hello", " there", ""]
    assert all("usage" not in e for e in events[:-1])


async def test_zero_token_stream_still_has_a_finish_chunk(
    bridge: TestClient, core: FakeCore
) -> None:
    core.inference.script = [final(completion=0)]
    response = await bridge.post(URL, json={"model": MODEL_ID, "prompt": "x", "stream": True})
    assert response.status == 200
    events = sse_events(await response.text())
    assert len(events) == 2
    assert events[0]["choices"][0]["finish_reason"] == "stop"
    assert events[1] == "[DONE]"


TWO_CHOICES = [
    *interleaved(["A", "B"], ["C"]),
    final(
        completion=3, choices=[inference_pb2.FINISH_REASON_LENGTH, inference_pb2.FINISH_REASON_STOP]
    ),
]


async def test_n_choices_with_session(bridge: TestClient, core: FakeCore) -> None:
    core.inference.script = TWO_CHOICES
    response = await bridge.post(
        URL,
        json={"model": MODEL_ID, "prompt": "x", "n": 2},
        headers={"X-Session-Affinity": "agent-42"},
    )
    assert response.status == 200
    data = await response.json()
    assert [(c["index"], c["text"], c["finish_reason"]) for c in data["choices"]] == [
        (0, "AB", "length"),
        (1, "C", "stop"),
    ]
    sent = core.inference.requests[0]
    assert (sent.sampling.n, sent.session_id) == (2, "agent-42")


async def test_n_choices_stream(bridge: TestClient, core: FakeCore) -> None:
    core.inference.script = TWO_CHOICES
    response = await bridge.post(
        URL, json={"model": MODEL_ID, "prompt": "x", "n": 2, "stream": True}
    )
    events = sse_events(await response.text())
    shapes = [
        (e["choices"][0]["index"], e["choices"][0]["text"], e["choices"][0]["finish_reason"])
        for e in events[:-1]
    ]
    assert shapes == [
        (0, "A", None),
        (1, "C", None),
        (0, "B", None),
        (0, "", "length"),
        (1, "", "stop"),
    ]
    assert events[-1] == "[DONE]"


async def test_session_header_over_128_characters_is_400(
    bridge: TestClient, core: FakeCore
) -> None:
    response = await bridge.post(
        URL, json={"model": MODEL_ID, "prompt": "x"}, headers={"x-session-affinity": "s" * 200}
    )
    assert response.status == 400
    assert (await response.json())["error"]["param"] == "x-session-affinity"
    assert core.inference.requests == []
