"""Structured output: JSON Schemas become GBNF grammars, and grammars are checked before use."""

from __future__ import annotations

import json

from llama_cpp.llama_grammar import json_schema_to_gbnf

from core.engine.vocab import Vocab
from core.errors import InvalidRequest

# Grammars and schemas are client input that llama.cpp compiles: keep them small.
MAX_CONSTRAINT_BYTES = 64 * 1024


def resolve(grammar: str, json_schema: str, vocab: Vocab) -> str:
    """The GBNF text a request's constraint compiles to ("" for none); blocking, so run it off
    the event loop. InvalidRequest names the field when the input cannot be compiled."""
    if json_schema:
        grammar = schema_grammar(json_schema)
        field = "sampling.json_schema"
    elif grammar:
        _check_size(grammar, "sampling.grammar")
        field = "sampling.grammar"
    else:
        return ""
    sampler = vocab.grammar_sampler(grammar)
    if sampler is None:
        raise InvalidRequest(f"{field} does not compile to a valid grammar", param=field)
    vocab.free_sampler(sampler)
    return grammar


def schema_grammar(text: str) -> str:
    """GBNF for a JSON Schema given as JSON text."""
    _check_size(text, "sampling.json_schema")
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"sampling.json_schema is not valid JSON: {exc.msg}", param="sampling.json_schema"
        ) from None
    if not isinstance(schema, dict | bool):
        raise InvalidRequest(
            "sampling.json_schema must be a JSON Schema object", param="sampling.json_schema"
        )
    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except (ValueError, KeyError, TypeError, RecursionError, NotImplementedError) as exc:
        raise InvalidRequest(
            f"sampling.json_schema is not supported: {exc}", param="sampling.json_schema"
        ) from None


def _check_size(text: str, field: str) -> None:
    if len(text.encode("utf-8")) > MAX_CONSTRAINT_BYTES:
        raise InvalidRequest(f"{field} is larger than {MAX_CONSTRAINT_BYTES} bytes", param=field)
