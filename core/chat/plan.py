"""What the model is given for a chat request: the prompt, and with tools the grammar and the
syntax its calls are read in. Blocking (templates are programs): run it off the event loop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.chat.templates import render_source, select_template
from core.chat.tools.grammar import lazy_trigger, tool_grammar
from core.chat.tools.syntax import ToolSyntax, detect
from core.chat.types import ChatMessage, ToolRequest


@dataclass(frozen=True, slots=True)
class ChatPlan:
    prompt: str
    # The syntax the answer's calls are read in; None when the model may call no tool.
    syntax: ToolSyntax | None = None
    # GBNF the answer must follow ("" for none).
    grammar: str = ""
    # The text that starts the grammar ("" when it rules from the first token).
    grammar_trigger: str = ""


def plan_chat(
    messages: Sequence[ChatMessage],
    tools: ToolRequest,
    functions: list[dict[str, Any]],
    *,
    model_template: str | None,
    architecture: str,
    override: str | None,
    bos_token: str,
    eos_token: str,
    json_schema: str = "",
    add_generation_prompt: bool = True,
) -> ChatPlan:
    """`functions` are the request's tools, checked (core.chat.tools.validate); `json_schema`
    is the schema a text answer must follow, kept in the grammar beside the calls."""
    source = select_template(
        model_template=model_template, architecture=architecture, override=override
    )
    syntax = detect(source)
    prompt = render_source(
        source,
        messages,
        syntax=syntax,
        functions=functions if tools.active else None,
        bos_token=bos_token,
        eos_token=eos_token,
        add_generation_prompt=add_generation_prompt,
    )
    if not tools.active:
        return ChatPlan(prompt)
    grammar = tool_grammar(syntax, tools, functions, json_schema)
    return ChatPlan(prompt, syntax, grammar, lazy_trigger(syntax, tools, json_schema))
