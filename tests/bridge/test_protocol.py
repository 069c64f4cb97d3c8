"""Table-driven tests of OpenAI request validation and the protobuf requests it builds."""

from __future__ import annotations

from typing import Any

import pytest

from rest_bridge import protocol
from rest_bridge.body import parse_body
from rest_bridge.errors import BadRequest

MODEL = "m"
USER = {"role": "user", "content": "hi"}


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [USER], **fields}


def completion(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": "Once", **fields}


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "an array"),
        (b'"text"', "a string"),
        (b"null", "null"),
        (b"3", "a number"),
    ],
)
def test_parse_body_rejects_non_objects(raw: bytes, fragment: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_body(raw)
    assert fragment in caught.value.message
    assert caught.value.status == 400


BAD_CHAT = [
    ({"messages": [USER]}, "model"),
    (chat(model=""), "model"),
    (chat(model=5), "model"),
    ({"model": MODEL}, "messages"),
    (chat(messages=[]), "messages"),
    (chat(messages="hi"), "messages"),
    (chat(messages=["hi"]), "messages[0]"),
    (chat(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
    (chat(messages=[{"content": "x"}]), "messages[0].role"),
    (chat(messages=[USER, {"role": "user", "content": None}]), "messages[1].content"),
    (chat(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    (chat(messages=[{"role": "user", "content": []}]), "messages[0].content"),
    (
        chat(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "http://x/a.png"}}],
                }
            ]
        ),
        "messages[0].content",
    ),
    (chat(messages=[{"role": "user", "content": [{"type": "text"}]}]), "messages[0].content"),
    (chat(messages=[{"role": "user", "content": "x", "name": 3}]), "messages[0].name"),
    (chat(temperature="hot"), "temperature"),
    (chat(temperature=2.5), "temperature"),
    (chat(temperature=-0.1), "temperature"),
    (chat(temperature=True), "temperature"),
    (chat(temperature=float("nan")), "temperature"),
    (chat(top_p=1.5), "top_p"),
    (chat(min_p=-1), "min_p"),
    (chat(top_k=-1), "top_k"),
    (chat(top_k=1.5), "top_k"),
    (chat(repeat_penalty=-1), "repeat_penalty"),
    (chat(presence_penalty=3), "presence_penalty"),
    (chat(frequency_penalty=-2.5), "frequency_penalty"),
    (chat(seed="42"), "seed"),
    (chat(seed=1.5), "seed"),
    (chat(stop=[str(i) for i in range(17)]), "stop"),
    (chat(stop=["x" * 257]), "stop"),
    (chat(stop=[1]), "stop"),
    (chat(stop=""), "stop"),
    (chat(stop={"a": 1}), "stop"),
    (chat(max_tokens=0), "max_tokens"),
    (chat(max_tokens=-5), "max_tokens"),
    (chat(max_tokens="10"), "max_tokens"),
    (chat(max_completion_tokens=0), "max_completion_tokens"),
    (chat(logit_bias=[1, 2]), "logit_bias"),
    (chat(logit_bias={"abc": 1}), "logit_bias"),
    (chat(logit_bias={"-5": 1}), "logit_bias"),
    (chat(logit_bias={"99999999999": 1}), "logit_bias"),
    (chat(logit_bias={"5": 101}), "logit_bias"),
    (chat(logit_bias={"5": "high"}), "logit_bias"),
    (chat(n=0), "n"),
    (chat(n=-1), "n"),
    (chat(n="2"), "n"),
    (chat(n=1.5), "n"),
    (chat(n=True), "n"),
    (chat(n=2**32), "n"),
    (chat(logprobs="yes"), "logprobs"),
    (chat(logprobs=1), "logprobs"),
    (chat(top_logprobs=3), "top_logprobs"),
    (chat(logprobs=False, top_logprobs=3), "top_logprobs"),
    (chat(logprobs=True, top_logprobs=21), "top_logprobs"),
    (chat(logprobs=True, top_logprobs=-1), "top_logprobs"),
    (chat(logprobs=True, top_logprobs=1.5), "top_logprobs"),
    (chat(response_format={"type": "xml"}), "response_format"),
    (chat(stream="yes"), "stream"),
    (chat(stream=True, stream_options="usage"), "stream_options"),
]


@pytest.mark.parametrize(("body", "param"), BAD_CHAT)
def test_chat_validation_names_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        protocol.chat_request(body)
    assert caught.value.param == param
    assert caught.value.status == 400
    assert caught.value.type == "invalid_request_error"


BAD_COMPLETION = [
    (completion(prompt=""), "prompt"),
    (completion(prompt=None), "prompt"),
    (completion(prompt=[]), "prompt"),
    (completion(prompt=["a", "b"]), "prompt"),
    (completion(prompt=[1, -2]), "prompt"),
    (completion(prompt=[1, True]), "prompt"),
    (completion(prompt=[1, 2**31]), "prompt"),
    (completion(prompt=[[1], [2]]), "prompt"),
    (completion(prompt={"text": "x"}), "prompt"),
    (completion(echo=True), "echo"),
    (completion(best_of=3), "best_of"),
    (completion(n=3, best_of=3), "best_of"),
    (completion(n=0), "n"),
    (completion(suffix="end"), "suffix"),
    (completion(logprobs=6), "logprobs"),
    (completion(logprobs=-1), "logprobs"),
    (completion(logprobs=True), "logprobs"),
    (completion(logprobs="2"), "logprobs"),
    (completion(logprobs=2, top_logprobs=2), "top_logprobs"),
    (completion(temperature="hot"), "temperature"),
]


@pytest.mark.parametrize(("body", "param"), BAD_COMPLETION)
def test_completion_validation_names_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        protocol.completion_request(body)
    assert caught.value.param == param


BAD_EMBEDDING = [
    ({"input": "x"}, "model"),
    ({"model": MODEL}, "input"),
    ({"model": MODEL, "input": ""}, "input"),
    ({"model": MODEL, "input": []}, "input"),
    ({"model": MODEL, "input": ["a", ""]}, "input"),
    ({"model": MODEL, "input": [["a"]]}, "input"),
    ({"model": MODEL, "input": [[1], []]}, "input"),
    ({"model": MODEL, "input": 5}, "input"),
    ({"model": MODEL, "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"model": MODEL, "input": "x", "dimensions": 64}, "dimensions"),
]


@pytest.mark.parametrize(("body", "param"), BAD_EMBEDDING)
def test_embedding_validation_names_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        protocol.embed_request(body)
    assert caught.value.param == param


def test_chat_request_carries_every_sampling_field() -> None:
    request, mode = protocol.chat_request(
        chat(
            temperature=0.5,
            top_p=0.9,
            top_k=20,
            min_p=0.1,
            repeat_penalty=1.1,
            presence_penalty=0.5,
            frequency_penalty=-0.5,
            seed=42,
            stop=["\n", "END"],
            max_tokens=64,
            logit_bias={"15": -100, "7": 2.5},
        )
    )
    s = request.sampling
    assert request.model_id == MODEL
    assert (s.temperature, s.top_k, s.seed, s.max_tokens) == (0.5, 20, 42, 64)
    assert s.top_p == pytest.approx(0.9)
    assert s.min_p == pytest.approx(0.1)
    assert s.repeat_penalty == pytest.approx(1.1)
    assert (s.presence_penalty, s.frequency_penalty) == (0.5, -0.5)
    assert list(s.stop) == ["\n", "END"]
    assert dict(s.logit_bias) == {15: -100.0, 7: 2.5}
    assert mode == protocol.StreamMode(stream=False, include_usage=False)


def test_unset_sampling_fields_stay_unset_for_the_core_defaults() -> None:
    request, _ = protocol.chat_request(chat())
    for name in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed", "max_tokens"):
        assert not request.sampling.HasField(name), name
    request, _ = protocol.chat_request(chat(temperature=None, seed=None, stop=None))
    assert not request.sampling.HasField("temperature")
    assert list(request.sampling.stop) == []


# top_p 0 keeps only the most likely token in llama.cpp's top-p sampler (min_keep 1): greedy.
@pytest.mark.parametrize("field", ["temperature", "top_p"])
def test_zero_is_sent_as_set(field: str) -> None:
    request, _ = protocol.chat_request(chat(**{field: 0}))
    assert request.sampling.HasField(field)
    assert getattr(request.sampling, field) == 0.0


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    request, _ = protocol.chat_request(chat(max_tokens=10, max_completion_tokens=20))
    assert request.sampling.max_tokens == 20
    request, _ = protocol.chat_request(chat(max_tokens=10))
    assert request.sampling.max_tokens == 10


def test_messages_roles_and_content_parts() -> None:
    request, _ = protocol.chat_request(
        chat(
            messages=[
                {"role": "developer", "content": "be brief"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                    "name": "ann",
                },
                {"role": "assistant", "content": None, "tool_calls": []},
                {"role": "tool", "content": "42", "tool_call_id": "t1"},
            ]
        )
    )
    got = [(m.role, m.content, m.name) for m in request.messages]
    assert got == [
        ("system", "be brief", ""),
        ("user", "ab", "ann"),
        ("assistant", "", ""),
        ("tool", "42", ""),
    ]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, protocol.StreamMode(False, False)),
        (
            {"stream": False, "stream_options": {"include_usage": True}},
            protocol.StreamMode(False, False),
        ),
        ({"stream": True}, protocol.StreamMode(True, False)),
        ({"stream": True, "stream_options": None}, protocol.StreamMode(True, False)),
        (
            {"stream": True, "stream_options": {"include_usage": True}},
            protocol.StreamMode(True, True),
        ),
    ],
)
def test_stream_mode(fields: dict[str, Any], expected: protocol.StreamMode) -> None:
    assert protocol.chat_request(chat(**fields))[1] == expected


@pytest.mark.parametrize(
    "fields",
    [
        {"n": 1, "logprobs": False, "top_logprobs": 0, "response_format": {"type": "text"}},
        {
            "tools": [],
            "tool_choice": "none",
            "user": "u1",
            "parallel_tool_calls": False,
            "metadata": {"a": "b"},
            "store": False,
            "service_tier": "auto",
            "unknown_future_field": [1, 2],
        },
    ],
)
def test_harmless_and_unknown_fields_are_accepted(fields: dict[str, Any]) -> None:
    request, _ = protocol.chat_request(chat(**fields))
    assert request.model_id == MODEL


def test_unknown_fields_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="rest_bridge.protocol")
    protocol.chat_request(chat(tools=[], service_tier="auto", future=1, chat_template_kwargs={}))
    assert "ignoring unsupported fields chat_template_kwargs, future" in caplog.text


@pytest.mark.parametrize(
    ("prompt", "text", "ids"),
    [
        ("Once upon", "Once upon", []),
        (["Once upon"], "Once upon", []),
        ([1, 2, 3], "", [1, 2, 3]),
        ([[4, 5]], "", [4, 5]),
    ],
)
def test_completion_prompt_forms(prompt: Any, text: str, ids: list[int]) -> None:
    request, _ = protocol.completion_request(completion(prompt=prompt, max_tokens=5))
    assert request.WhichOneof("prompt") == ("text" if text else "token_ids")
    assert request.text == text
    assert list(request.token_ids.ids) == ids
    assert request.sampling.max_tokens == 5


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("one", [("text", "one")]),
        (["a", "b"], [("text", "a"), ("text", "b")]),
        ([1, 2], [("token_ids", [1, 2])]),
        ([[1], [2, 3]], [("token_ids", [1]), ("token_ids", [2, 3])]),
        (["a", [9]], [("text", "a"), ("token_ids", [9])]),
    ],
)
def test_embedding_input_forms(value: Any, expected: list[tuple[str, Any]]) -> None:
    request, encoding = protocol.embed_request({"model": MODEL, "input": value})
    got = [
        (item.WhichOneof("input"), item.text if item.HasField("text") else list(item.token_ids.ids))
        for item in request.inputs
    ]
    assert got == expected
    assert encoding == "float"


def test_embedding_encoding_format_base64() -> None:
    body = {"model": MODEL, "input": "x", "encoding_format": "base64"}
    _, encoding = protocol.embed_request(body)
    assert encoding == "base64"
