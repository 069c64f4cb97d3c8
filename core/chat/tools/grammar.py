"""The GBNF grammar that makes a model's tool calls well-formed and true to their schemas.

Calls are written exactly as the syntax's opener and the JSON below show, so the parser can
recognise them; each call's arguments follow its tool's parameters schema. With tool_choice
AUTO the answer is either calls or text, decided by its first characters (text may not start
with the opener's first character); REQUIRED and a named function allow calls only.
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
    if mode is ToolChoiceMode.AUTO:
        rules.append(f"root ::= mv-calls | {_answer_rule(spec.opener, json_schema, rules)}")
    else:
        rules.append("root ::= mv-calls")
    grammar = "\n".join(rules)
    check_grammar(grammar, _FIELD)
    return grammar


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
    """A text answer: not starting with the calls' opener character; or the response schema."""
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
