"""The GBNF grammar that makes a model's tool calls well-formed and true to their schemas.

Calls are written exactly as the syntax's opener and the JSON below show, so the parser can
recognise them; each call's arguments follow its tool's parameters schema. REQUIRED and a named
function allow calls only. With tool_choice AUTO, where calls may follow text (Hermes, Mistral),
the grammar is the calls alone and waits for their opener (lazy_trigger(), as llama.cpp's lazy
grammars); where calls can only open the answer (generic JSON, Llama 3.x) the answer is calls or
text, decided by its first characters (text may not start with the opener's first character),
and with a response schema, calls or that schema.
"""

from __future__ import annotations

import json
from typing import Any

from core.chat.tools.syntax import SPECS, ToolSyntax
from core.chat.types import ToolChoiceMode, ToolRequest
from core.engine.grammar import MAX_GRAMMAR_BYTES, check_grammar, parse_schema, schema_rules
from core.errors import InvalidRequest

_FIELD = "tools"
# Rules written here; the schemas' rules are prefixed t0-, t1-, ... and r- (response schema).
_ANY_TEXT = ".*"
_LEADING_SPACE = "[ \\t\\n]{0,4}"


def tool_grammar(
    syntax: ToolSyntax, request: ToolRequest, functions: list[dict[str, Any]], json_schema: str
) -> str:
    """The grammar for a request's answer; `functions` are its checked tools, in order, and
    `json_schema` the schema a text answer must follow ("" for any text)."""
    spec = SPECS[syntax]
    mode = request.choice.mode
    rules, calls = [], []
    for index, function in enumerate(functions):
        if mode is ToolChoiceMode.FUNCTION and function["name"] != request.choice.function:
            continue
        prefix = f"t{index}-"
        field = f"tools[{index}].parameters"
        strict = request.tools[index].strict
        rules.append(schema_rules(function["parameters"], prefix, field, strict=strict))
        # Named apart from the schemas' rules (all prefixed t0-, t1-, ... or r-).
        call = f"mv-call-{index}"
        rules.append(f"{call} ::= {_call_rule(function['name'], spec.arguments_key, prefix)}")
        calls.append(call)
        _check_running_size(rules)
    rules.append(f"mv-call ::= {' | '.join(calls)}")
    several = request.parallel and mode is not ToolChoiceMode.FUNCTION
    rules.append(f"mv-calls ::= {_calls_rule(syntax, several)}")
    if mode is ToolChoiceMode.AUTO and not lazy_trigger(syntax, request, json_schema):
        rules.append(f"root ::= mv-calls | {_answer_rule(spec.opener, json_schema, rules)}")
    else:
        rules.append("root ::= mv-calls")
    grammar = "\n".join(rules)
    check_grammar(grammar, _FIELD)
    return grammar


def lazy_trigger(syntax: ToolSyntax, request: ToolRequest, json_schema: str) -> str:
    """The text that starts tool_grammar()'s grammar, "" when it rules from the first token:
    with AUTO and a syntax whose calls may follow text, the calls' opener (the answer is free
    until the model writes it). A response schema keeps the grammar from the start: the text
    must follow it too."""
    spec = SPECS[syntax]
    lazy = request.choice.mode is ToolChoiceMode.AUTO and spec.anywhere and not json_schema
    return spec.opener if lazy else ""


def _check_running_size(rules: list[str]) -> None:
    """Stop converting once the grammar is too large, rather than convert every tool first."""
    if sum(len(rule) for rule in rules) > MAX_GRAMMAR_BYTES:
        raise InvalidRequest(
            f"tools: their schemas make a grammar over {MAX_GRAMMAR_BYTES} bytes; send fewer "
            "or smaller tools",
            param=_FIELD,
        )


def _call_rule(name: str, arguments_key: str, prefix: str) -> str:
    head = '{"name": ' + json.dumps(name) + ', "' + arguments_key + '": '
    return f"{_literal(head)} {prefix}root {_literal('}')}"


def _calls_rule(syntax: ToolSyntax, several: bool) -> str:
    more = ' ("," " "? mv-call)*' if several else ""
    if syntax is ToolSyntax.GENERIC:
        return f'{_literal(SPECS[syntax].opener)} mv-call{more} "]}}"'
    if syntax is ToolSyntax.MISTRAL:
        return f'{_literal(SPECS[syntax].opener + "[")} mv-call{more} "]"'
    if syntax is ToolSyntax.HERMES:
        block = f"{_literal('<tool_call>' + chr(10))} mv-call {_literal(chr(10) + '</tool_call>')}"
        return f"({block})" + (f' ("\\n" ({block}))*' if several else "")
    return "mv-call"  # Llama 3.x writes one call per turn


def _answer_rule(opener: str, json_schema: str, rules: list[str]) -> str:
    """A text answer: not starting with the calls' opener character; or the response schema.
    (Text that only may not begin with the whole opener was tried: SmolLM2, shown a call in
    the conversation, began `{"tool_response": {"name": "get_weather", ...` and was let drift
    into prose where this rule holds it to the call.)"""
    if json_schema:
        schema = parse_schema(json_schema, "sampling.json_schema")
        rules.append(schema_rules(schema, "r-", "sampling.json_schema"))
        return "r-root"
    first = _class_char(opener[0])
    return f"({_LEADING_SPACE} [^{first} \\t\\n] {_ANY_TEXT})?"


def _literal(text: str) -> str:
    escaped = (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    )
    return f'"{escaped}"'


def _class_char(char: str) -> str:
    return "\\" + char if char in "[]^\\-" else char
