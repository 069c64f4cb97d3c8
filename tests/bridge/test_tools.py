"""Tool calling on /v1/chat/completions: OpenAI fields to the core and calls back, on the fake core."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient
from minerva.v1 import inference_pb2 as pb

from rest_bridge import protocol
from rest_bridge.errors import BadRequest
from tests.bridge.conftest import MODEL_ID, FakeCore, chunk, final, rpc_error, sse_events

URL = "/v1/chat/completions"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}
ASK = {"role": "user", "content": "Weather in Paris?"}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL_ID, "messages": [ASK], "tools": [TOOL], **fields}


def calling(*pieces: pb.ToolCallDelta, index: int = 0, text: str = "") -> pb.GenerationChunk:
    piece = chunk(text, 5, index=index)
    piece.tool_calls.extend(pieces)
    return piece


CALL_SCRIPT = [
    calling(pb.ToolCallDelta(call_index=0, id="call_a", name="get_weather", arguments="")),
    calling(pb.ToolCallDelta(call_index=0, arguments='{"city": ')),
    calling(pb.ToolCallDelta(call_index=0, arguments='"Paris"}')),
    calling(pb.ToolCallDelta(call_index=1, id="call_b", name="get_time", arguments="{}")),
    final(choices=[pb.FINISH_REASON_TOOL_CALLS]),
]


def test_tools_and_choices_reach_the_core() -> None:
    request, _ = protocol.chat_request(
        body(
            tools=[TOOL, {"type": "function", "function": {"name": "now", "description": "Time"}}],
            tool_choice={"type": "function", "function": {"name": "now"}},
            parallel_tool_calls=False,
        )
    )
    assert [(t.name, t.description) for t in request.tools] == [
        ("get_weather", ""),
        ("now", "Time"),
    ]
    assert (
        request.tools[0].parameters
        == '{"type": "object", "properties": {"city": {"type": "string"}}}'
    )
    assert request.tools[1].parameters == ""
    assert (request.tool_choice.mode, request.tool_choice.function_name) == (
        pb.TOOL_CHOICE_MODE_FUNCTION,
        "now",
    )
    assert request.HasField("parallel_tool_calls") and not request.parallel_tool_calls


@pytest.mark.parametrize(
    ("choice", "mode"),
    [
        ("none", pb.TOOL_CHOICE_MODE_NONE),
        ("auto", pb.TOOL_CHOICE_MODE_AUTO),
        ("required", pb.TOOL_CHOICE_MODE_REQUIRED),
    ],
)
def test_tool_choice_strings(choice: str, mode: int) -> None:
    request, _ = protocol.chat_request(body(tool_choice=choice))
    assert request.tool_choice.mode == mode


def test_unset_choice_and_parallel_are_left_to_the_core() -> None:
    request, _ = protocol.chat_request(body())
    assert not request.HasField("tool_choice") and not request.HasField("parallel_tool_calls")


def test_the_history_of_calls_and_results_reaches_the_core() -> None:
    call = {
        "id": "call_a",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    messages = [
        ASK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
        # Some clients send arguments as an object.
        {
            "role": "assistant",
            "tool_calls": [{**call, "function": {"name": "f", "arguments": {"a": 1}}}],
        },
    ]
    request, _ = protocol.chat_request(body(messages=messages))
    assistant, tool, other = request.messages[1:]
    assert (assistant.content, list(assistant.tool_calls)) == (
        "",
        [pb.ToolCall(id="call_a", name="get_weather", arguments='{"city": "Paris"}')],
    )
    assert (tool.role, tool.content, tool.tool_call_id) == ("tool", "sunny", "call_a")
    assert other.tool_calls[0].arguments == '{"a": 1}'


BAD: list[tuple[dict[str, Any], str]] = [
    ({"tools": {"name": "f"}}, "tools"),
    ({"tools": ["f"]}, "tools[0]"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
    ({"tools": [{"type": "function"}]}, "tools[0].function"),
    ({"tools": [{"type": "function", "function": {"description": "x"}}]}, "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": 3}}]}, "tools[0].function.name"),
    (
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": "{}"}}]},
        "tools[0].function.parameters",
    ),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": {"type": "function"}}, "tool_choice"),
    ({"tool_choice": {"type": "function", "function": {"name": ""}}}, "tool_choice"),
    ({"messages": [ASK, {"role": "assistant", "tool_calls": {}}]}, "messages[1].tool_calls"),
    (
        {"messages": [ASK, {"role": "assistant", "tool_calls": [{"id": "a"}]}]},
        "messages[1].tool_calls[0].function",
    ),
    (
        {
            "messages": [
                ASK,
                {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": 5}}]},
            ]
        },
        "messages[1].tool_calls[0].function.arguments",
    ),
    (
        {"messages": [ASK, {"role": "tool", "content": "x", "tool_call_id": 5}]},
        "messages[1].tool_call_id",
    ),
]


@pytest.mark.parametrize(("fields", "param"), BAD)
def test_malformed_tool_fields_are_400_naming_the_param(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        protocol.chat_request(body(**fields))
    assert caught.value.param == param


async def test_a_whole_answer_of_calls_has_null_content(bridge: TestClient, core: FakeCore) -> None:
    core.inference.script = CALL_SCRIPT
    response = await bridge.post(URL, json=body())
    assert response.status == 200
    choice = (await response.json())["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "id": "call_b",
                "type": "function",
                "function": {"name": "get_time", "arguments": "{}"},
            },
        ],
    }


async def test_content_beside_calls_is_kept(bridge: TestClient, core: FakeCore) -> None:
    core.inference.script = [chunk("Let me look. ", 1), *CALL_SCRIPT]
    response = await bridge.post(URL, json=body())
    message = (await response.json())["choices"][0]["message"]
    assert message["content"] == "Let me look. " and len(message["tool_calls"]) == 2


async def test_streamed_calls_open_with_id_type_and_name(
    bridge: TestClient, core: FakeCore
) -> None:
    core.inference.script = CALL_SCRIPT
    response = await bridge.post(URL, json=body(stream=True))
    events = sse_events(await response.text())
    assert events[-1] == "[DONE]"
    deltas = [e["choices"][0]["delta"] for e in events[:-1] if e["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    calls = [d["tool_calls"] for d in deltas if "tool_calls" in d]
    assert calls == [
        [
            {
                "index": 0,
                "id": "call_a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ],
        [{"index": 0, "function": {"arguments": '{"city": '}}],
        [{"index": 0, "function": {"arguments": '"Paris"}'}}],
        [
            {
                "index": 1,
                "id": "call_b",
                "type": "function",
                "function": {"name": "get_time", "arguments": "{}"},
            }
        ],
    ]
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("core_param", "param"),
    [
        ("tools[1].name", "tools[1].function.name"),
        ("tools[0].parameters", "tools[0].function.parameters"),
        ("tool_choice.function_name", "tool_choice"),
        ("messages[2].tool_calls[0].arguments", "messages[2].tool_calls[0].function.arguments"),
        ("sampling.grammar", "grammar"),
    ],
)
async def test_core_tool_errors_name_the_openai_param(
    bridge: TestClient, core: FakeCore, core_param: str, param: str
) -> None:
    core.inference.script = [rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "bad", core_param)]
    response = await bridge.post(URL, json=body())
    assert response.status == 400
    assert (await response.json())["error"]["param"] == param
