"""Tool calling through both processes with the official openai SDK, as agents use it."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from tests.e2e.conftest import MODEL

pytestmark = pytest.mark.e2e

WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            # A bound keeps this small model from writing one endless string.
            "properties": {"city": {"type": "string", "maxLength": 40}},
            "required": ["city"],
        },
    },
}
CLOCK: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time now",
        "parameters": {"type": "object", "properties": {}},
    },
}
ASK: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the weather in Paris?"}
]
FEW_SHOT: list[ChatCompletionMessageParam] = [
    *ASK,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    {"role": "assistant", "content": "It is sunny and 21 C in Paris."},
    {"role": "user", "content": "What is the weather in Berlin?"},
]


def create(client: openai.OpenAI, **fields: Any) -> Any:
    request: dict[str, Any] = {
        "model": MODEL,
        "messages": ASK,
        "tools": [WEATHER, CLOCK],
        "temperature": 0,
        "max_tokens": 80,
        "parallel_tool_calls": False,
        **fields,
    }
    return client.chat.completions.create(**request)


def city_of(call: Any) -> str:
    assert call.type == "function" and call.function.name == "get_weather"
    assert call.id.startswith("call_")
    city = json.loads(call.function.arguments)["city"]
    assert isinstance(city, str)
    return city


def test_required(own_client: openai.OpenAI) -> None:
    reply = create(own_client, tool_choice="required")
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert city_of(call) == "Paris"


def test_named_function(own_client: openai.OpenAI) -> None:
    reply = create(own_client, tool_choice={"type": "function", "function": {"name": "get_time"}})
    [call] = reply.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_time", {})
    assert reply.choices[0].finish_reason == "tool_calls"


def test_auto_calls_when_the_conversation_shows_how(own_client: openai.OpenAI) -> None:
    reply = create(own_client, messages=FEW_SHOT, tool_choice="auto")
    [call] = reply.choices[0].message.tool_calls
    assert city_of(call) == "Berlin"
    assert reply.choices[0].finish_reason == "tool_calls"


def test_none_answers_in_text(own_client: openai.OpenAI) -> None:
    reply = create(own_client, messages=FEW_SHOT, tool_choice="none", max_tokens=24)
    message = reply.choices[0].message
    assert message.tool_calls is None and message.content
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_streamed_calls(own_client: openai.OpenAI) -> None:
    stream = create(
        own_client, tool_choice="required", stream=True, stream_options={"include_usage": True}
    )
    firsts, arguments, finish, usage = [], "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                if delta.id is not None:
                    firsts.append((delta.index, delta.type, delta.function.name))
                arguments += delta.function.arguments or ""
            finish = choice.finish_reason or finish
    assert firsts == [(0, "function", "get_weather")]
    assert json.loads(arguments)["city"] == "Paris"
    assert finish == "tool_calls"
    assert usage is not None and usage.completion_tokens > 5


def test_a_tool_result_goes_back_and_the_prompt_prefix_is_reused(own_client: openai.OpenAI) -> None:
    first = create(own_client, tool_choice="required")
    call = first.choices[0].message.tool_calls[0]
    history: list[ChatCompletionMessageParam] = [
        *ASK,
        first.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ]
    second = create(own_client, messages=history, max_tokens=32)
    message = second.choices[0].message
    assert message.content or message.tool_calls
    # The call is shown as the model wrote it, so the first turn is a cached prefix of the
    # second, as an agent's next step needs; the call and its result are in the prompt.
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + first.usage.completion_tokens


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "function"}]}, "tools[0].function"),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
        (
            {
                "tools": [
                    {"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}
                ]
            },
            "tools[0].function.parameters",
        ),
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name"}}]},
            "tools[0].function.name",
        ),
    ],
)
def test_bad_tool_input_is_a_400_naming_the_param(
    own_client: openai.OpenAI, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        create(own_client, **fields)
    assert caught.value.param == param
