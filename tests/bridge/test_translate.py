"""Pure tests of protobuf -> OpenAI objects: completions, chunks, usage, models, embeddings."""

from __future__ import annotations

import base64
import json
import struct

import pytest
from minerva.v1 import inference_pb2, models_pb2

from rest_bridge import translate
from tests.bridge.conftest import FINGERPRINT, chunk, final, sample_model

IDS = translate.ResponseIds(id="chatcmpl-abc", created=1700000000, model="m")


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (inference_pb2.FINISH_REASON_STOP, "stop"),
        (inference_pb2.FINISH_REASON_LENGTH, "length"),
        (inference_pb2.FINISH_REASON_CANCELLED, "length"),
        (inference_pb2.FINISH_REASON_UNSPECIFIED, "stop"),
    ],
)
def test_finish_reasons(reason: int, expected: str) -> None:
    assert translate.finish_reason(reason) == expected


def test_usage_totals_and_cached_tokens() -> None:
    pb = inference_pb2.Usage(prompt_tokens=11, completion_tokens=5, cached_prompt_tokens=8)
    assert translate.usage(pb) == {
        "prompt_tokens": 11,
        "completion_tokens": 5,
        "total_tokens": 16,
        "prompt_tokens_details": {"cached_tokens": 8},
    }


def test_collect_joins_chunks_and_keeps_final() -> None:
    events = [
        inference_pb2.ChatResponse(chunk=chunk("Hel", 1)),
        inference_pb2.ChatResponse(chunk=chunk("", 2)),
        inference_pb2.ChatResponse(chunk=chunk("lo", 3)),
        inference_pb2.ChatResponse(final=final(inference_pb2.FINISH_REASON_LENGTH)),
    ]
    texts, last = translate.collect(events)
    assert texts == {0: "Hello"}
    assert last.finish_reason == inference_pb2.FINISH_REASON_LENGTH


def test_chat_completion_object() -> None:
    body = translate.chat_completion(IDS, {0: "Hi!"}, final(completion=2))
    assert body["id"] == "chatcmpl-abc"
    assert body["object"] == "chat.completion"
    assert (body["created"], body["model"], body["system_fingerprint"]) == (
        1700000000,
        "m",
        FINGERPRINT,
    )
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hi!"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"]["total_tokens"] == 9


def test_completion_object() -> None:
    ids = translate.ResponseIds(id="cmpl-1", created=5, model="m")
    body = translate.completion(ids, {0: "text"}, final(inference_pb2.FINISH_REASON_LENGTH))
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "text"
    assert body["choices"][0]["finish_reason"] == "length"


def test_chunks_carry_usage_null_only_when_usage_was_asked_for() -> None:
    plain = translate.chat_chunk(IDS, {"content": "x"})
    asked = translate.chat_chunk(IDS, {"content": "x"}, with_usage_field=True)
    assert "usage" not in plain
    assert asked["usage"] is None
    assert plain["choices"] == [
        {"index": 0, "delta": {"content": "x"}, "logprobs": None, "finish_reason": None}
    ]
    text_chunk = translate.completion_chunk(IDS, "y", finish="stop", with_usage_field=True)
    assert text_chunk["choices"][0]["text"] == "y"
    assert text_chunk["choices"][0]["finish_reason"] == "stop"
    assert text_chunk["usage"] is None


def test_usage_chunk_has_no_choices() -> None:
    body = translate.usage_chunk(IDS, "chat.completion.chunk", final(prompt=3, completion=4))
    assert body["choices"] == []
    assert body["usage"]["total_tokens"] == 7
    assert body["object"] == "chat.completion.chunk"


def test_response_ids_are_unique_and_prefixed() -> None:
    a = translate.ResponseIds.new("chatcmpl", "m", 12.7)
    b = translate.ResponseIds.new("chatcmpl", "m", 12.7)
    assert a.id.startswith("chatcmpl-") and len(a.id) > len("chatcmpl-") + 16
    assert a.id != b.id
    assert a.created == 12


def test_model_object_has_metadata_and_stays_small() -> None:
    model = sample_model()
    model.modified_unix = 1738911720
    body = translate.model_object(model)
    assert body["created"] == 1738911720
    assert (body["id"], body["object"], body["owned_by"]) == (
        "smollm2-135m-instruct-q4_1",
        "model",
        "minerva",
    )
    assert (body["quantization"], body["file_size_mb"], body["tensor_count"]) == ("Q4_1", 98.0, 272)
    assert (body["permission"], body["root"], body["parent"]) == ([], body["id"], None)
    meta = body["minerva"]
    assert meta["format"] == "gguf"
    assert (meta["layer_count"], meta["vocab_size"]) == (30, 49152)
    assert meta["context_length"] == 8192
    assert meta["load_state"] == "loaded"
    assert meta["error"] is None
    assert len(json.dumps(body)) < 1024


def test_model_object_of_a_broken_file_stays_small() -> None:
    broken = models_pb2.Model(id="bad", error="x" * 5000, load_state=models_pb2.LOAD_STATE_FAILED)
    body = translate.model_object(broken)
    assert body["minerva"]["load_state"] == "failed"
    assert body["minerva"]["format"] == "unspecified"
    assert len(json.dumps(body)) < 1024


def test_model_list() -> None:
    body = translate.model_list([sample_model("a"), sample_model("b")])
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["a", "b"]


def test_base64_vector_is_little_endian_float32() -> None:
    values = [0.5, -1.25, 3.0]
    encoded = translate.encode_vector(values, "base64")
    assert isinstance(encoded, str)
    raw = base64.b64decode(encoded)
    assert raw == b"".join(struct.pack("<f", v) for v in values)
    assert translate.encode_vector(values, "float") == values


def test_embedding_list() -> None:
    response = inference_pb2.EmbedResponse(
        embeddings=[
            inference_pb2.Embedding(values=[1.0, 0.0]),
            inference_pb2.Embedding(values=[0.0, 1.0]),
        ],
        usage=inference_pb2.Usage(prompt_tokens=6),
    )
    body = translate.embedding_list(response, "m", "float")
    assert body["object"] == "list"
    assert body["model"] == "m"
    assert body["data"] == [
        {"object": "embedding", "index": 0, "embedding": [1.0, 0.0]},
        {"object": "embedding", "index": 1, "embedding": [0.0, 1.0]},
    ]
    assert body["usage"] == {"prompt_tokens": 6, "total_tokens": 6}
