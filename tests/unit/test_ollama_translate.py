"""Pure translation of Ollama's request fields and response shapes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from minerva.v1 import inference_pb2, models_pb2

from rest_bridge.errors import BadRequest
from rest_bridge.ollama import requests as ask
from rest_bridge.ollama import responses as shape
from rest_bridge.seed import core_seed


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (300, 300.0),
        (0, 0.0),
        (-1, -1.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("300ms", 0.3),
        ("-1m", -60.0),
        ("-1", -1.0),
        ("0", 0.0),
        ("90", 90.0),
    ],
)
def test_keep_alive_numbers_and_go_durations(value: Any, seconds: float) -> None:
    assert ask.keep_alive({"keep_alive": value}, 300.0) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["5 minutes", "m", "5x", "", True, [1]])
def test_bad_keep_alive_is_400(value: Any) -> None:
    with pytest.raises(BadRequest):
        ask.keep_alive({"keep_alive": value}, 300.0)


@pytest.mark.parametrize("body", [{}, {"keep_alive": None}])
def test_absent_keep_alive_is_the_default_not_the_last_setting(body: dict[str, Any]) -> None:
    # Ollama resets the expiry on every request: to its keep_alive, else to the default.
    assert ask.keep_alive(body, 300.0) == 300.0
    assert ask.keep_alive(body, -1.0) == -1.0


def test_options_map_onto_sampling() -> None:
    params, num_ctx = ask.sampling(
        {
            "options": {
                "num_predict": 12,
                "temperature": 0.2,
                "top_k": 5,
                "top_p": 0.9,
                "min_p": 0.1,
                "seed": 42,
                "stop": ["\n"],
                "repeat_penalty": 1.1,
                "presence_penalty": 0.5,
                "frequency_penalty": 0.25,
                "num_ctx": 1024,
                "num_thread": 4,  # read by num_thread (the core's threads), checked here too
                "repeat_last_n": 64,  # what the sampler does anyway
                "something_new": 1,  # unknown keys are ignored, as Ollama does
            },
            "format": "json",
            "logprobs": True,
            "top_logprobs": 3,
        }
    )
    assert (params.max_tokens, params.top_k, list(params.stop)) == (12, 5, ["\n"])
    assert params.seed == core_seed(42) and num_ctx == 1024
    assert params.temperature == pytest.approx(0.2) and params.min_p == pytest.approx(0.1)
    assert json.loads(params.json_schema) == {"type": "object"}
    assert (params.logprobs, params.top_logprobs) == (True, 3)


@pytest.mark.parametrize(
    ("body", "size"),
    [({}, None), ({"options": {}}, None), ({"options": {"num_ctx": 8192.0}}, 8192)],
)
def test_num_ctx_is_read_without_sampling(body: dict[str, Any], size: int | None) -> None:
    # /api/embed and the empty-prompt loads read num_ctx alone (the model loads with it).
    assert ask.num_ctx(body) == size


@pytest.mark.parametrize("value", [0, -1, 2**32, "8k", True, 1.5])
def test_bad_num_ctx_is_400(value: Any) -> None:
    with pytest.raises(BadRequest) as caught:
        ask.num_ctx({"options": {"num_ctx": value}})
    assert caught.value.param == "options.num_ctx"


@pytest.mark.parametrize(
    ("body", "threads"),
    [
        ({}, None),
        ({"options": {"num_thread": None}}, None),
        ({"options": {"num_thread": 0}}, None),  # Ollama's "default"
        ({"options": {"num_thread": 3.0}}, 3),
    ],
)
def test_num_thread_is_read_for_the_core(body: dict[str, Any], threads: int | None) -> None:
    assert ask.num_thread(body) == threads
    assert "num_thread" not in ask.NO_EFFECT_OPTIONS


@pytest.mark.parametrize("value", [-2, 2**32, "four", True, 1.5, [1]])
def test_bad_num_thread_is_400(value: Any) -> None:
    for read in (ask.num_thread, ask.sampling):
        with pytest.raises(BadRequest) as caught:
            read({"options": {"num_thread": value}})
        assert caught.value.param == "options.num_thread"


@pytest.mark.parametrize("predict", [-1, -2])
def test_num_predict_without_limit(predict: int) -> None:
    params, _ = ask.sampling({"options": {"num_predict": predict, "seed": -1}})
    assert not params.HasField("max_tokens") and not params.HasField("seed")


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"temperature": "hot"}, "options.temperature"),
        ({"num_predict": 0}, "options.num_predict"),
        ({"mirostat": 2}, "options.mirostat"),
        ({"typical_p": 0.5}, "options.typical_p"),
        ({"repeat_last_n": 128}, "options.repeat_last_n"),
        ({"stop": [1]}, "options.stop"),
        ({"num_ctx": 0}, "options.num_ctx"),
    ],
)
def test_options_that_cannot_be_honoured_are_400(options: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        ask.sampling({"options": options})
    assert caught.value.param == param


def test_format_schema_and_bad_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    params, _ = ask.sampling({"format": schema})
    assert json.loads(params.json_schema) == schema
    with pytest.raises(BadRequest):
        ask.sampling({"format": "yaml"})


def test_names_drop_the_latest_tag() -> None:
    assert ask.model_id({"model": "smol:latest"}) == ("smol", "smol:latest")
    assert ask.model_id({"name": "smol"}) == ("smol", "smol")
    with pytest.raises(BadRequest):
        ask.model_id({})


def test_messages_with_tool_calls_and_results() -> None:
    turns = ask.messages(
        {
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
                    ],
                },
                {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
            ]
        }
    )
    assert json.loads(turns[1].tool_calls[0].arguments) == {"city": "Paris"}
    assert (turns[2].role, turns[2].name, turns[2].content) == ("tool", "get_weather", "sunny")
    with pytest.raises(BadRequest):
        ask.messages({"messages": [{"role": "user", "content": "x", "images": ["AAAA"]}]})


def test_thinking_is_refused_as_ollama_does() -> None:
    with pytest.raises(BadRequest, match='"smol" does not support thinking'):
        ask.refuse_thinking({"think": True}, "smol")
    ask.refuse_thinking({"think": False}, "smol")


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (134_515_008, "134.52M"),
        (8_000_000_000, "8B"),
        (1_235_814_400, "1.2B"),
        (270_000_000, "270M"),
        (5_000, "5K"),
    ],
)
def test_parameter_size_as_ollama_writes_it(count: int, text: str) -> None:
    assert shape.human_number(count) == text


def test_timings_are_nanoseconds() -> None:
    final = inference_pb2.GenerationFinal(
        finish_reason=inference_pb2.FINISH_REASON_LENGTH,
        usage=inference_pb2.Usage(prompt_tokens=7, completion_tokens=3),
        timings=inference_pb2.Timings(total_ms=12.5, queue_ms=2.0, prompt_ms=4.0, decode_ms=6.0),
    )
    assert shape.timings(final) == {
        "done_reason": "length",
        "total_duration": 12_500_000,
        "load_duration": 2_000_000,
        "prompt_eval_count": 7,
        "prompt_eval_duration": 4_000_000,
        "eval_count": 3,
        "eval_duration": 6_000_000,
    }


def test_show_lists_the_threads_in_effect_as_ollama_prints_parameters() -> None:
    reply = models_pb2.GetModelResponse(model=models_pb2.Model(id="m", threads=3))
    shown = shape.show(reply)
    assert shown["parameters"] == "num_thread                     3"
    assert shown["modelfile"].endswith("FROM m\nPARAMETER num_thread 3\n")
    assert (
        shape.show(models_pb2.GetModelResponse(model=models_pb2.Model(id="m")))["parameters"] == ""
    )


def test_a_model_kept_for_good_expires_far_away() -> None:
    model = models_pb2.Model(id="m", memory_bytes=5, context_size=2048)
    assert shape.running(model)["expires_at"].startswith("2318-")
    model.expires_unix = 1_700_000_000.5
    assert shape.running(model)["expires_at"].startswith("2023-11-14T22:13:20.5")
