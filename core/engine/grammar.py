"""Structured output: JSON Schemas become GBNF grammars, and grammars are checked before use.

Grammars are client input that llama.cpp compiles and runs in C++ with no limits of its own:
deep nesting overflows its parser's stack, token syntax (`<[id]>`, `!`) can make it throw through
the C API, and large repetition counts or long rule names blow up compile time and memory. So
every grammar, written by a client or generated from a schema, is bounded here first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from llama_cpp.llama_grammar import SchemaConverter
from minerva.v1.limits import MAX_CONSTRAINT_BYTES

from core.engine.schema_checks import check_schema, rewrite_patterns
from core.engine.vocab import Vocab
from core.errors import InvalidRequest

# What a request may send (the contract's limit), and what its (possibly generated) grammar may be.
MAX_GRAMMAR_BYTES = 256 * 1024
MAX_GROUP_DEPTH = 128
MAX_NAME_CHARS = 128
MAX_REPEATS = 10_000  # the sum of all {m,n} bounds: each unit becomes a rule
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def resolve(
    grammar: str, json_schema: str, vocab: Vocab, grammar_param: str = "sampling.grammar"
) -> str:
    """The GBNF text a request's constraint compiles to ("" for none); blocking, so run it off
    the event loop. InvalidRequest names the field when the input is refused. What clients may
    send is bounded where requests arrive (check_constraint_size); a grammar here may also be one
    the server generated (tool calls), so only the grammar bounds apply."""
    if json_schema:
        field = "sampling.json_schema"
        grammar = schema_grammar(json_schema)
    elif grammar:
        field = grammar_param
    else:
        return ""
    check_grammar(grammar, field)
    sampler = vocab.grammar_sampler(grammar)
    if sampler is None:
        raise InvalidRequest(f"{field} does not compile to a valid grammar", param=field)
    vocab.free_sampler(sampler)
    return grammar


def check_constraint_size(text: str, field: str) -> None:
    """A client's grammar or schema text is at most MAX_CONSTRAINT_BYTES."""
    _check_size(text, MAX_CONSTRAINT_BYTES, field)


def schema_grammar(text: str) -> str:
    """GBNF for a JSON Schema given as JSON text."""
    field = "sampling.json_schema"
    check_constraint_size(text, field)
    return schema_rules(parse_schema(text, field), "", field)


def parse_schema(text: str, field: str) -> dict[str, Any] | bool:
    """A JSON Schema from JSON text; InvalidRequest naming `field` when it is not one."""
    try:
        schema = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidRequest(f"{field} is not valid JSON: {exc}", param=field) from None
    if not isinstance(schema, dict | bool):
        raise InvalidRequest(f"{field} must be a JSON Schema object", param=field)
    return schema


def schema_rules(
    schema: dict[str, Any] | bool, prefix: str, field: str, *, strict: bool = True
) -> str:
    """GBNF rules for a JSON Schema. With a `prefix`, every rule name gets it, so several
    schemas can share one grammar: the schema's own rule is then `{prefix}root`. `strict`:
    keywords that cannot be enforced are refused (see core.engine.schema_checks)."""
    check_schema(schema, field, strict=strict)
    converter = _Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    try:
        converter.visit(converter.resolve_refs(rewrite_patterns(schema), "input"), "")
        rules: str = converter.format_grammar()
    except Exception as exc:  # the converter's many failure modes all mean "unsupported schema"
        raise InvalidRequest(f"{field} is not supported: {exc!r}", param=field) from None
    return _prefixed(rules, prefix) if prefix else rules


class _Converter(SchemaConverter):
    r"""llama-cpp-python's converter with literals escaped in full: its own leaves backslashes
    alone, so an enum value or property name holding `\` or `"` breaks the grammar."""

    def _format_literal(self, literal: str) -> str:
        escaped = (
            literal.replace("\\", "\\\\")
            .replace('"', '\\"')
            .replace("\n", "\\n")
            .replace("\r", "\\r")
            .replace("\t", "\\t")
        )
        return f'"{escaped}"'


def _prefixed(grammar: str, prefix: str) -> str:
    """Every rule name in a GBNF text (definitions and references) with `prefix` in front."""
    return "".join(prefix + text if kind == "name" else text for kind, text in _segments(grammar))


def check_grammar(grammar: str, field: str) -> None:
    """Refuse a GBNF grammar llama.cpp could choke on (see the module docstring)."""
    _check_size(grammar, MAX_GRAMMAR_BYTES, field)
    if "\0" in grammar:
        raise InvalidRequest(f"{field} contains a NUL character", param=field)
    depth, repeats = 0, 0
    for kind, text in _outside_literals(grammar):
        if kind == "(":
            depth += 1
            if depth > MAX_GROUP_DEPTH:
                raise InvalidRequest(
                    f"{field} nests groups deeper than {MAX_GROUP_DEPTH}", param=field
                )
        elif kind == ")":
            depth -= 1
        elif kind in "<!":
            raise InvalidRequest(f"{field}: token syntax ('<', '!') is not accepted", param=field)
        elif kind == "{":
            repeats += max((int(n) for n in re.findall(r"\d+", text)), default=0)
        elif kind == "name" and len(text) > MAX_NAME_CHARS:
            raise InvalidRequest(
                f"{field} has a name over {MAX_NAME_CHARS} characters", param=field
            )
    if repeats > MAX_REPEATS:
        raise InvalidRequest(
            f"{field} repeats {repeats} times in all; at most {MAX_REPEATS}", param=field
        )


def _outside_literals(grammar: str) -> Iterator[tuple[str, str]]:
    """The structure of a GBNF text: ( ) < ! {...} and names, skipping literals, classes and
    comments."""
    for kind, text in _segments(grammar):
        if kind != "text":
            yield kind, text


def _segments(grammar: str) -> Iterator[tuple[str, str]]:
    """A GBNF text cut into pieces that join back into it: names, groups' ( and ), token syntax
    < and !, repetition bounds {...}, and "text" for everything else (literals, classes,
    comments, operators, spaces)."""
    i, n = 0, len(grammar)
    while i < n:
        c, start = grammar[i], i
        if c in '"[':
            i = _skip_quoted(grammar, i, '"' if c == '"' else "]")
            yield "text", grammar[start:i]
        elif c == "#":
            end = grammar.find("\n", i)
            i = n if end < 0 else end
            yield "text", grammar[start:i]
        elif c == "{":
            end = grammar.find("}", i)
            i = n if end < 0 else end + 1
            yield "{", grammar[start:i]
        elif c in _NAME_CHARS:
            while i < n and grammar[i] in _NAME_CHARS:
                i += 1
            yield "name", grammar[start:i]
        else:
            i += 1
            yield (c if c in "()<!" else "text"), c


def _skip_quoted(text: str, start: int, close: str) -> int:
    i = start + 1
    while i < len(text) and text[i] != close:
        i += 2 if text[i] == "\\" else 1
    return min(i + 1, len(text))


def _check_size(text: str, limit: int, field: str) -> None:
    if len(text.encode("utf-8", "surrogatepass")) > limit:
        raise InvalidRequest(f"{field} is larger than {limit} bytes", param=field)
