"""Checks of what a chat request says about tools; every error names the field at fault."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from minerva.v1.limits import MAX_TOOLS

from core.chat.types import ChatMessage, Tool, ToolChoiceMode, ToolRequest
from core.engine.grammar import check_constraint_size
from core.errors import InvalidRequest

# OpenAI's rule for function names.
_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
# Top-level keywords that could make the arguments something other than one object.
_NOT_AN_OBJECT = frozenset(
    {"anyOf", "oneOf", "allOf", "$ref", "enum", "const", "items", "prefixItems", "not"}
)


def checked_functions(request: ToolRequest) -> list[dict[str, Any]]:
    """The tools as {"name", "description", "parameters"} dicts with parsed schemas, after
    checking names, schemas and tool_choice."""
    if len(request.tools) > MAX_TOOLS:
        raise InvalidRequest(f"{len(request.tools)} tools; at most {MAX_TOOLS}", param="tools")
    functions, seen = [], set()
    for i, tool in enumerate(request.tools):
        if tool.name in seen:
            raise InvalidRequest(
                f"tools[{i}].name {tool.name!r} is used twice", param=f"tools[{i}].name"
            )
        seen.add(tool.name)
        functions.append(_function(i, tool))
    _check_choice(request, seen)
    return functions


def _function(index: int, tool: Tool) -> dict[str, Any]:
    if not _NAME.fullmatch(tool.name):
        raise InvalidRequest(
            f"tools[{index}].name must be 1-64 letters, digits, '_' or '-', got {tool.name!r}",
            param=f"tools[{index}].name",
        )
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    function["parameters"] = _parameters(index, tool.parameters)
    return function


def _parameters(index: int, text: str) -> dict[str, Any]:
    param = f"tools[{index}].parameters"
    if not text:
        return dict(_NO_PARAMETERS)
    check_constraint_size(text, param)
    schema = json_object(text, param, "a JSON Schema object")
    kind = schema.get("type", "object")
    if kind != "object" and not (isinstance(kind, list) and kind == ["object"]):
        raise InvalidRequest(
            f"{param} must describe an object (type 'object'), got type {kind!r}", param=param
        )
    indirect = sorted(_NOT_AN_OBJECT & schema.keys())
    if indirect:
        raise InvalidRequest(
            f"{param} must describe the arguments object itself, with properties; "
            f"{indirect[0]!r} at its top level could make them something else",
            param=param,
        )
    return schema


def _check_choice(request: ToolRequest, names: set[str]) -> None:
    mode = request.choice.mode
    if mode in (ToolChoiceMode.REQUIRED, ToolChoiceMode.FUNCTION) and not request.tools:
        raise InvalidRequest(
            f"tool_choice {mode.value!r} needs at least one tool", param="tool_choice"
        )
    if mode is ToolChoiceMode.FUNCTION and request.choice.function not in names:
        raise InvalidRequest(
            f"tool_choice names the function {request.choice.function!r}, which is not among "
            "the tools",
            param="tool_choice.function_name",
        )


def check_tool_messages(messages: Sequence[ChatMessage]) -> None:
    """Tool calls only on assistant turns, each with a name (their arguments are parsed where
    the turn is rendered: call_arguments)."""
    for i, message in enumerate(messages):
        if message.tool_calls and message.role != "assistant":
            raise InvalidRequest(
                f"messages[{i}] has tool_calls but only assistant messages make calls",
                param=f"messages[{i}].tool_calls",
            )
        for j, call in enumerate(message.tool_calls):
            if not call.name:
                raise InvalidRequest(
                    f"messages[{i}].tool_calls[{j}].name must not be empty",
                    param=f"messages[{i}].tool_calls[{j}].name",
                )


def call_arguments(text: str, where: str) -> dict[str, Any]:
    """A call's arguments text parsed; empty text is no arguments."""
    param = f"{where}.arguments"
    if not text.strip():
        return {}
    return json_object(text, param, "a JSON object")


def json_object(text: str, param: str, what: str) -> dict[str, Any]:
    """JSON text of an object, holding only real text (no lone surrogates such as \\ud800)."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidRequest(f"{param} is not valid JSON: {exc}", param=param) from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{param} must be {what}", param=param)
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            f"{param} holds an invalid character (a lone surrogate)", param=param
        ) from None
    return value
