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

from llama_cpp.llama_grammar import json_schema_to_gbnf

from core.engine.vocab import Vocab
from core.errors import InvalidRequest

# What a request may send, and what its (possibly generated) grammar may be.
MAX_CONSTRAINT_BYTES = 64 * 1024
MAX_GRAMMAR_BYTES = 256 * 1024
MAX_GROUP_DEPTH = 128
MAX_NAME_CHARS = 128
MAX_REPEATS = 10_000  # the sum of all {m,n} bounds: each unit becomes a rule
MAX_SCHEMA_BOUND = 1_000  # minLength, maxItems, ... and {m,n} in patterns
_BOUND_KEYS = frozenset(
    {"minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"}
)
_PATTERN_BOUND = re.compile(r"\{(\d+)(?:,(\d*))?\}")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def resolve(grammar: str, json_schema: str, vocab: Vocab) -> str:
    """The GBNF text a request's constraint compiles to ("" for none); blocking, so run it off
    the event loop. InvalidRequest names the field when the input is refused."""
    if json_schema:
        field = "sampling.json_schema"
        grammar = schema_grammar(json_schema)
    elif grammar:
        field = "sampling.grammar"
        _check_size(grammar, MAX_CONSTRAINT_BYTES, field)
    else:
        return ""
    check_grammar(grammar, field)
    sampler = vocab.grammar_sampler(grammar)
    if sampler is None:
        raise InvalidRequest(f"{field} does not compile to a valid grammar", param=field)
    vocab.free_sampler(sampler)
    return grammar


def schema_grammar(text: str) -> str:
    """GBNF for a JSON Schema given as JSON text."""
    field = "sampling.json_schema"
    _check_size(text, MAX_CONSTRAINT_BYTES, field)
    try:
        schema = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidRequest(f"{field} is not valid JSON: {exc}", param=field) from None
    if not isinstance(schema, dict | bool):
        raise InvalidRequest(f"{field} must be a JSON Schema object", param=field)
    _check_schema(schema)
    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter's many failure modes all mean "unsupported schema"
        raise InvalidRequest(f"{field} is not supported: {exc!r}", param=field) from None


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
    i, n = 0, len(grammar)
    while i < n:
        c = grammar[i]
        if c in '"[':
            i = _skip_quoted(grammar, i, '"' if c == '"' else "]")
        elif c == "#":
            end = grammar.find("\n", i)
            i = n if end < 0 else end
        elif c == "{":
            end = grammar.find("}", i)
            end = n if end < 0 else end
            yield "{", grammar[i + 1 : end]
            i = end + 1
        elif c in _NAME_CHARS:
            start = i
            while i < n and grammar[i] in _NAME_CHARS:
                i += 1
            yield "name", grammar[start:i]
        else:
            if c in "()<!":
                yield c, c
            i += 1


def _skip_quoted(text: str, start: int, close: str) -> int:
    i = start + 1
    while i < len(text) and text[i] != close:
        i += 2 if text[i] == "\\" else 1
    return i + 1


def _check_schema(schema: object) -> None:
    """Bounds and references checked before conversion, which would expand them in memory."""
    field = "sampling.json_schema"
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                _check_schema_value(key, value, field)
                stack.append(value)


def _check_schema_value(key: str, value: object, field: str) -> None:
    if key == "$ref" and not (isinstance(value, str) and value.startswith("#")):
        raise InvalidRequest(f"{field}: only local $refs ('#...') are followed", param=field)
    if key in _BOUND_KEYS and isinstance(value, int | float) and value > MAX_SCHEMA_BOUND:
        raise InvalidRequest(f"{field}: {key} over {MAX_SCHEMA_BOUND}", param=field)
    if key == "pattern" and isinstance(value, str):
        for low, high in _PATTERN_BOUND.findall(value):
            if max(int(low), int(high or 0)) > MAX_SCHEMA_BOUND:
                raise InvalidRequest(
                    f"{field}: pattern repeats over {MAX_SCHEMA_BOUND}", param=field
                )


def _check_size(text: str, limit: int, field: str) -> None:
    if len(text.encode("utf-8", "surrogatepass")) > limit:
        raise InvalidRequest(f"{field} is larger than {limit} bytes", param=field)
