"""Tools and tool turns as the chat template sees them.

A template that knows tools (a native syntax) gets them the way Hugging Face passes them: a
`tools` list of {"type": "function", "function": {...}}, assistant turns with `tool_calls`
whose arguments are objects, and "tool" turns with `tool_call_id`. A template that knows none
(the generic syntax) gets what llama.cpp's polyfills give it: a system instruction listing the
tools, calls written in the JSON the model is asked to write, and results as user turns unless
the template shows tool turns itself.
"""

from __future__ import annotations

import json
from typing import Any

from core.chat.tools.syntax import SPECS, ToolSyntax, shows_tool_turns

Message = dict[str, Any]

# One text whatever tool_choice says, so that a conversation's prompt prefix stays the same
# from step to step (the grammar, not the prompt, enforces the choice).
GENERIC_INSTRUCTION = (
    "You can call the tools (functions) listed below. To call tools, answer with only a JSON "
    "object, and nothing else, in this form:\n"
    '{"tool_calls": [{"name": "<tool name>", "arguments": {<arguments as the tool\'s '
    "parameters describe>}}]}\n"
    'Each result comes back in a message {"tool_response": ...}. When no tool is needed, '
    "answer the user directly.\n\nTools:\n"
)


def prepare(
    messages: list[Message],
    syntax: ToolSyntax,
    functions: list[dict[str, Any]] | None,
    template: str,
) -> tuple[list[Message], list[dict[str, Any]] | None]:
    """The messages and `tools` variable to render with `template`; `functions` is None when
    no tool is offered (tool turns in the history are still shown)."""
    if SPECS[syntax].native:
        tools = [{"type": "function", "function": f} for f in functions] if functions else None
        return messages, tools
    results_as_user = not shows_tool_turns(template)
    shown = _merge_results(_generic_turn(m, messages, results_as_user) for m in messages)
    if functions:
        shown = _with_instruction(shown, GENERIC_INSTRUCTION + _tool_lines(functions))
    return shown, None


def _tool_lines(functions: list[dict[str, Any]]) -> str:
    return "\n".join(json.dumps(f, ensure_ascii=False) for f in functions)


def _generic_turn(message: Message, history: list[Message], results_as_user: bool) -> Message:
    if message.get("tool_calls"):
        calls = [
            {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
            for c in message["tool_calls"]
        ]
        written = json.dumps({"tool_calls": calls}, ensure_ascii=False)
        content = f"{message['content']}\n{written}" if message["content"] else written
        return {"role": "assistant", "content": content}
    if message["role"] == "tool" and results_as_user:
        response: dict[str, Any] = {}
        name = message.get("name") or _called_name(message.get("tool_call_id", ""), history)
        if name:
            response["name"] = name
        response["content"] = message["content"]
        return {
            "role": "user",
            "content": json.dumps({"tool_response": response}, ensure_ascii=False),
            "tool_result": True,
        }
    return message


def _called_name(call_id: str, history: list[Message]) -> str:
    """The name of the call a tool turn answers, from the assistant turn that made it."""
    if not call_id:
        return ""
    for message in history:
        for call in message.get("tool_calls", ()):
            if call.get("id") == call_id:
                return str(call["function"]["name"])
    return ""


def _merge_results(messages: Any) -> list[Message]:
    """A tool result shown as a user turn joins the user turns beside it: templates that insist
    on alternating roles (Gemma's) would refuse two user turns in a row."""
    merged: list[Message] = []
    for message in messages:
        previous = merged[-1] if merged else None
        if (
            previous is not None
            and previous["role"] == message["role"] == "user"
            and (previous.get("tool_result") or message.get("tool_result"))
        ):
            merged[-1] = {
                "role": "user",
                "content": f"{previous['content']}\n{message['content']}",
                "tool_result": True,
            }
        else:
            merged.append(message)
    return [{k: v for k, v in m.items() if k != "tool_result"} for m in merged]


def _with_instruction(messages: list[Message], instruction: str) -> list[Message]:
    """The instruction after the system turn's own text (as llama.cpp adds it), or as the
    system turn when there is none."""
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": f"{messages[0]['content']}\n\n{instruction}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]
