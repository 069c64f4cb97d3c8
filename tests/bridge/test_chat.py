"""POST /v1/chat/completions through aiohttp's test client on the fake core."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient
from minerva.v1 import inference_pb2

from rest_bridge.errors import CORE_UNAVAILABLE
from tests.bridge.conftest import (
    FINGERPRINT,
    MODEL_ID,
    FakeCore,
    MakeBridge,
    chunk,
    final,
    interleaved,
    rpc_error,
    sse_events,
)

URL = "/v1/chat/completions"


def body(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], **fields}


async def test_non_streaming_chat_completion(bridge: TestClient, core: FakeCore) -> None:
    response = await bridge.post(URL, json=body(temperature=0.2, max_tokens=8))
    assert response.status == 200
    data = await response.json()
    assert data["object"] == "chat.completion"
    assert data["id"].startswith("chatcmpl-")
    assert data["model"] == MODEL_ID
    assert data["system_fingerprint"] == FINGERPRINT
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "Hello there"}
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 2},
    }
    sent = core.inference.requests[0]
    assert isinstance(sent, inference_pb2.ChatRequest)
    assert [(m.role, m.content) for m in sent.messages] == [("user", "Hi")]
    assert sent.sampling.max_tokens == 8
    assert core.inference.metadata == [()]


async def test_core_key_is_sent_as_bearer_metadata(make_bridge: MakeBridge, core: FakeCore) -> None:
    bridge = await make_bridge(api_keys=("k1",), core_api_key="core-key")
    response = await bridge.post(URL, json=body(), headers={"Authorization": "Bearer k1"})
    assert response.status == 200
    assert core.inference.metadata == [(("authorization", "Bearer core-key"),)]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (inference_pb2.FINISH_REASON_STOP, "stop"),
        (inference_pb2.FINISH_REASON_LENGTH, "length"),
        (inference_pb2.FINISH_REASON_CANCELLED, "length"),
    ],
)
async def test_finish_reason(
    bridge: TestClient, core: FakeCore, reason: inference_pb2.FinishReason, expected: str
) -> None:
    core.inference.script = [chunk("a", 1), final(reason)]
    data = await (await bridge.post(URL, json=body())).json()
    assert data["choices"][0]["finish_reason"] == expected


async def test_stream_framing(bridge: TestClient, core: FakeCore) -> None:
    first = chunk("Hel", 1)
    first.fingerprint = FINGERPRINT  # the core sets it on a stream's first message
    core.inference.script = [first, chunk("", 2), chunk("lo", 3), final()]
    response = await bridge.post(URL, json=body(stream=True))
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    text = await response.text()
    assert text.endswith("data: [DONE]\n\n")
    events = sse_events(text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert [c["system_fingerprint"] for c in chunks] == [FINGERPRINT] * 4
    assert all("usage" not in c for c in chunks)


async def test_stream_with_include_usage(bridge: TestClient, core: FakeCore) -> None:
    core.inference.script = [chunk("a", 1), final(prompt=5, completion=1, cached=0)]
    response = await bridge.post(
        URL, json=body(stream=True, stream_options={"include_usage": True})
    )
    events = sse_events(await response.text())
    assert events[-1] == "[DONE]"
    *choice_chunks, usage_chunk = events[:-1]
    assert all(c["usage"] is None for c in choice_chunks)
    assert choice_chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 1,
        "total_tokens": 6,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


@pytest.mark.parametrize(
    ("error", "status", "param"),
    [
        (
            rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "bad temp", "sampling.temperature"),
            400,
            "temperature",
        ),
        (rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "too long", "prompt"), 400, "messages"),
        (
            rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "token 99999", "sampling.logit_bias"),
            400,
            "logit_bias",
        ),
        (rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "n > slots", "sampling.n"), 400, "n"),
        (
            rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "too long", "session_id"),
            400,
            "x-session-affinity",
        ),
        (rpc_error(grpc.StatusCode.NOT_FOUND, "unknown model", "model_id"), 404, "model"),
        (rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "bad file", "model_id"), 400, "model"),
        (rpc_error(grpc.StatusCode.UNAUTHENTICATED, "no key"), 401, None),
        (rpc_error(grpc.StatusCode.UNAVAILABLE, "connect failed"), 503, None),
        (rpc_error(grpc.StatusCode.INTERNAL, "boom"), 500, None),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_error_before_first_token_keeps_its_status(
    bridge: TestClient,
    core: FakeCore,
    error: Exception,
    status: int,
    param: str | None,
    stream: bool,
) -> None:
    core.inference.script = [error]
    response = await bridge.post(URL, json=body(stream=stream))
    assert response.status == status
    assert response.headers["Content-Type"].startswith("application/json")
    data = await response.json()
    assert data["error"]["param"] == param
    # An unavailable core's details name addresses: they go to the log, not to the client.
    shown = CORE_UNAVAILABLE if status == 503 else error.details()  # type: ignore[attr-defined]
    assert data["error"]["message"].endswith(shown)


async def test_queue_full_is_429_with_retry_after(bridge: TestClient, core: FakeCore) -> None:
    core.inference.script = [rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")]
    response = await bridge.post(URL, json=body(stream=True))
    assert response.status == 429
    assert response.headers["Retry-After"] == "1"
    assert (await response.json())["error"]["code"] == "rate_limit_exceeded"


async def test_unavailable_core_message_names_the_address(
    bridge: TestClient, core: FakeCore
) -> None:
    core.inference.script = [rpc_error(grpc.StatusCode.UNAVAILABLE, "refused")]
    data = await (await bridge.post(URL, json=body())).json()
    assert data["error"]["message"] == CORE_UNAVAILABLE


async def test_first_core_message_commits_the_stream_even_when_empty(
    bridge: TestClient, core: FakeCore
) -> None:
    # An empty chunk (a held-back token) means generation started: headers go out with it.
    core.inference.script = [chunk("", 1), rpc_error(grpc.StatusCode.INTERNAL, "boom")]
    response = await bridge.post(URL, json=body(stream=True))
    assert response.status == 200
    events = sse_events(await response.text())
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[1]["error"]["code"] == "internal_error"
    assert events[2:] == ["[DONE]"]


async def test_error_mid_stream_is_an_error_event_then_done(
    bridge: TestClient, core: FakeCore
) -> None:
    core.inference.script = [
        chunk("partial", 1),
        rpc_error(grpc.StatusCode.UNAVAILABLE, "Socket closed"),
    ]
    response = await bridge.post(URL, json=body(stream=True))
    assert response.status == 200
    events = sse_events(await response.text())
    assert [e["choices"][0]["delta"] for e in events[:2]] == [
        {"role": "assistant", "content": ""},
        {"content": "partial"},
    ]
    assert events[2] == {
        "error": {
            "message": CORE_UNAVAILABLE,
            "type": "server_error",
            "param": None,
            "code": "core_unavailable",
        }
    }
    assert events[3:] == ["[DONE]"]
    assert core.inference.calls[0].cancelled.is_set()


async def test_validation_error_never_reaches_the_core(bridge: TestClient, core: FakeCore) -> None:
    response = await bridge.post(URL, json=body(temperature="hot", stream=True))
    assert response.status == 400
    data = await response.json()
    assert data["error"]["param"] == "temperature"
    assert data["error"]["type"] == "invalid_request_error"
    assert core.inference.requests == []


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [(b"{oops", "not valid JSON"), (b"[]", "must be a JSON object"), (b"", "not valid JSON")],
)
async def test_malformed_body_is_400(bridge: TestClient, raw: bytes, fragment: str) -> None:
    response = await bridge.post(URL, data=raw, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert fragment in (await response.json())["error"]["message"]


async def test_unexpected_failure_mid_stream_is_a_generic_error_event(
    bridge: TestClient, core: FakeCore
) -> None:
    core.inference.script = [chunk("partial", 1), RuntimeError("bug with secret details")]
    response = await bridge.post(URL, json=body(stream=True))
    assert response.status == 200
    events = sse_events(await response.text())
    assert events[-2] == {
        "error": {
            "message": "internal error in the bridge",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }
    assert events[-1] == "[DONE]"


async def test_unexpected_failure_before_headers_is_a_500_envelope(
    bridge: TestClient, core: FakeCore
) -> None:
    core.inference.script = [RuntimeError("bug with secret details")]
    response = await bridge.post(URL, json=body(stream=True))
    assert response.status == 500
    error = (await response.json())["error"]
    assert error["message"] == "internal error in the bridge"
    assert "secret" not in await response.text()


STOP, LENGTH = inference_pb2.FINISH_REASON_STOP, inference_pb2.FINISH_REASON_LENGTH
ROLE = {"role": "assistant", "content": ""}
THREE_CHOICES = [
    *interleaved(["Red", "."], ["Blue"], ["Green", "!"]),
    final(completion=5, choices=[STOP, LENGTH, STOP]),
]


async def test_n_choices_non_streaming(bridge: TestClient, core: FakeCore) -> None:
    core.inference.script = THREE_CHOICES
    response = await bridge.post(URL, json=body(n=3, seed=5))
    assert response.status == 200
    data = await response.json()
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in data["choices"]] == [
        (0, "Red.", "stop"),
        (1, "Blue", "length"),
        (2, "Green!", "stop"),
    ]
    assert data["usage"]["completion_tokens"] == 5
    sent = core.inference.requests[0]
    assert (sent.sampling.n, sent.sampling.seed) == (3, 5)


async def test_n_choices_stream(bridge: TestClient, core: FakeCore) -> None:
    core.inference.script = THREE_CHOICES
    response = await bridge.post(
        URL, json=body(n=3, stream=True, stream_options={"include_usage": True})
    )
    events = sse_events(await response.text())
    assert events[-1] == "[DONE]"
    *choice_chunks, usage_chunk = events[:-1]
    by_index: dict[int, list[Any]] = {}
    for c in choice_chunks:
        (choice,) = c["choices"]
        by_index.setdefault(choice["index"], []).append((choice["delta"], choice["finish_reason"]))
    assert by_index == {
        0: [(ROLE, None), ({"content": "Red"}, None), ({"content": "."}, None), ({}, "stop")],
        1: [(ROLE, None), ({"content": "Blue"}, None), ({}, "length")],
        2: [(ROLE, None), ({"content": "Green"}, None), ({"content": "!"}, None), ({}, "stop")],
    }
    assert [c["choices"][0]["finish_reason"] for c in choice_chunks[-3:]] == [
        "stop",
        "length",
        "stop",
    ]
    assert all(c["usage"] is None for c in choice_chunks)
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize(
    ("headers", "session"),
    [({}, ""), ({"x-session-affinity": "conv-1"}, "conv-1"), ({"X-SESSION-AFFINITY": "c2"}, "c2")],
)
async def test_session_header_is_sent_as_session_id(
    bridge: TestClient, core: FakeCore, headers: dict[str, str], session: str
) -> None:
    response = await bridge.post(URL, json=body(user="end-user-7"), headers=headers)
    assert response.status == 200
    assert core.inference.requests[0].session_id == session


async def test_session_header_over_128_characters_is_400(
    bridge: TestClient, core: FakeCore
) -> None:
    response = await bridge.post(
        URL, json=body(stream=True), headers={"x-session-affinity": "s" * 129}
    )
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["param"] == "x-session-affinity"
    assert "at most 128" in error["message"]
    assert core.inference.requests == []


async def test_session_header_that_is_not_utf8_is_400(bridge: TestClient, core: FakeCore) -> None:
    """aiohttp keeps undecodable header bytes as surrogates, which protobuf cannot encode."""
    payload = json.dumps(body()).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", bridge.port)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nx-session-affinity: conv-\xff\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, answer = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert json.loads(answer)["error"]["param"] == "x-session-affinity"
    assert core.inference.requests == []
