"""OpenAI tool calling <-> the core's: request fields to protobuf, calls back to OpenAI shapes.

The bridge checks shapes (what it must read to translate); names, duplicates, schemas and
tool_choice's function are checked by the core, whose errors name the OpenAI parameter.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from minerva.v1 import inference_pb2

from rest_bridge.errors import BadRequest
from rest_bridge.fields import get_bool, get_str, require_object, type_name

_CHOICE_MODES = {
    "none": inference_pb2.TOOL_CHOICE_MODE_NONE,
    "auto": inference_pb2.TOOL_CHOICE_MODE_AUTO,
    "required": inference_pb2.TOOL_CHOICE_MODE_REQUIRED,
}


def tool_fields(body: dict[str, Any]) -> dict[str, Any]:
    """ChatRequest fields for `tools`, `tool_choice` and `parallel_tool_calls`."""
    fields: dict[str, Any] = {"tools": parse_tools(body)}
    choice = parse_tool_choice(body)
    if choice is not None:
        fields["tool_choice"] = choice
    parallel = get_bool(body, "parallel_tool_calls")
    if parallel is not None:
        fields["parallel_tool_calls"] = parallel
    return fields


def parse_tools(body: dict[str, Any]) -> list[inference_pb2.Tool]:
    tools = body.get("tools")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise BadRequest(f"'tools' must be an array, got {type_name(tools)}", "tools")
    return [_tool(f"tools[{i}]", tool) for i, tool in enumerate(tools)]


def _tool(where: str, tool: Any) -> inference_pb2.Tool:
    if not isinstance(tool, dict):
        raise BadRequest(f"'{where}' must be an object, got {type_name(tool)}", where)
    if tool.get("type", "function") != "function":
        raise BadRequest(
            f"'{where}.type' must be 'function', got {tool.get('type')!r}", f"{where}.type"
        )
    function = require_object(tool, "function", prefix=f"{where}.")
    prefix = f"{where}.function."
    name = get_str(function, "name", required=True, prefix=prefix)
    description = get_str(function, "description", prefix=prefix) or ""
    strict = get_bool(function, "strict", prefix=prefix)
    parameters = function.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise BadRequest(
            f"'{prefix}parameters' must be a JSON Schema object, got {type_name(parameters)}",
            f"{prefix}parameters",
        )
    return inference_pb2.Tool(
        name=name or "",
        description=description,
        parameters=json.dumps(parameters) if parameters is not None else "",
        strict=bool(strict),
    )


def parse_tool_choice(body: dict[str, Any]) -> inference_pb2.ToolChoice | None:
    """'none' | 'auto' | 'required' | {"type": "function", "function": {"name": ...}}."""
    choice = body.get("tool_choice")
    if choice is None:
        return None
    if isinstance(choice, str) and choice in _CHOICE_MODES:
        return inference_pb2.ToolChoice(mode=_CHOICE_MODES[choice])
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            return inference_pb2.ToolChoice(
                mode=inference_pb2.TOOL_CHOICE_MODE_FUNCTION, function_name=name
            )
    raise BadRequest(
        "'tool_choice' must be 'none', 'auto', 'required' or "
        '{"type": "function", "function": {"name": ...}}',
        "tool_choice",
    )


def message_tool_fields(where: str, message: dict[str, Any]) -> dict[str, Any]:
    """ChatMessage fields for an assistant's `tool_calls` and a tool turn's `tool_call_id`."""
    fields: dict[str, Any] = {}
    calls = message.get("tool_calls")
    if calls is not None:
        if not isinstance(calls, list):
            raise BadRequest(f"'{where}.tool_calls' must be an array", f"{where}.tool_calls")
        fields["tool_calls"] = [
            _history_call(f"{where}.tool_calls[{j}]", call) for j, call in enumerate(calls)
        ]
    call_id = get_str(message, "tool_call_id", prefix=f"{where}.")
    if call_id:
        fields["tool_call_id"] = call_id
    return fields


def _history_call(where: str, call: Any) -> inference_pb2.ToolCall:
    if not isinstance(call, dict):
        raise BadRequest(f"'{where}' must be an object, got {type_name(call)}", where)
    function = require_object(call, "function", prefix=f"{where}.")
    arguments = function.get("arguments", "")
    if isinstance(arguments, dict):  # some clients send the object itself
        arguments = json.dumps(arguments)
    if not isinstance(arguments, str):
        raise BadRequest(
            f"'{where}.function.arguments' must be a JSON string", f"{where}.function.arguments"
        )
    return inference_pb2.ToolCall(
        id=get_str(call, "id", prefix=f"{where}.") or "",
        name=get_str(function, "name", required=True, prefix=f"{where}.function.") or "",
        arguments=arguments,
    )


# --- responses -------------------------------------------------------------------------------


def delta_calls(deltas: Iterable[inference_pb2.ToolCallDelta]) -> list[dict[str, Any]]:
    """A stream chunk's `delta.tool_calls`: a call's first piece carries id, type and name."""
    shown = []
    for delta in deltas:
        item: dict[str, Any] = {"index": delta.call_index}
        function: dict[str, Any] = {"arguments": delta.arguments}
        if delta.id:
            item.update(id=delta.id, type="function")
            function = {"name": delta.name, **function}
        item["function"] = function
        shown.append(item)
    return shown


def collect_calls(events: Iterable[Any]) -> dict[int, list[dict[str, Any]]]:
    """Each choice's whole tool calls from a stream's pieces, keyed by choice index."""
    calls: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
    for event in events:
        if event.WhichOneof("event") != "chunk":
            continue
        for delta in event.chunk.tool_calls:
            call = calls[event.chunk.index].setdefault(
                delta.call_index,
                {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if delta.id:
                call["id"], call["function"]["name"] = delta.id, delta.name
            call["function"]["arguments"] += delta.arguments
    return {index: [c for _, c in sorted(found.items())] for index, found in calls.items()}


def assistant_message(text: str, calls: Mapping[int, list[dict[str, Any]]], index: int) -> dict:
    """A whole answer's message: content is null when the answer is only calls."""
    made = calls.get(index, [])
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if made:
        message["content"] = text if text.strip() else None
        message["tool_calls"] = made
    return message
