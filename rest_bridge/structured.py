"""Structured output: OpenAI's response_format and llama.cpp's `grammar` -> one core constraint."""

from __future__ import annotations

import json
from typing import Any

from minerva.v1 import inference_pb2
from minerva.v1.limits import MAX_CONSTRAINT_BYTES

from rest_bridge.errors import BadRequest
from rest_bridge.fields import get_bool, get_str, require_object

ANY_OBJECT_SCHEMA = '{"type": "object"}'
_SPEC = "response_format.json_schema."


def constraint(body: dict[str, Any]) -> inference_pb2.SamplingParams:
    """SamplingParams with sampling.grammar or sampling.json_schema set, or neither."""
    schema = response_schema(body)
    # llama.cpp's server takes an empty grammar as none, so this does too.
    grammar = get_str(body, "grammar")
    if grammar and schema is not None:
        raise BadRequest(
            "'grammar' cannot be combined with a JSON response_format: send one constraint",
            "grammar",
        )
    if grammar:
        return inference_pb2.SamplingParams(grammar=_checked_size(grammar, "grammar"))
    if schema is not None:
        return inference_pb2.SamplingParams(json_schema=schema)
    return inference_pb2.SamplingParams()


def response_schema(body: dict[str, Any]) -> str | None:
    """The JSON Schema text that response_format asks for; None for text or no response_format."""
    if body.get("response_format") is None:
        return None
    kind = require_object(body, "response_format").get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return ANY_OBJECT_SCHEMA
    if kind == "json_schema":
        return _named_schema(body["response_format"])
    raise BadRequest(
        f"'response_format.type' must be 'text', 'json_object' or 'json_schema', got {kind!r}",
        "response_format",
    )


def _named_schema(response_format: dict[str, Any]) -> str:
    """{"name", "schema", "strict"?, "description"?}: every part is checked, only the schema
    reaches the core (which always enforces it, as strict asks)."""
    spec = require_object(response_format, "json_schema", prefix="response_format.")
    get_str(spec, "name", prefix=_SPEC)
    get_str(spec, "description", prefix=_SPEC)
    get_bool(spec, "strict", prefix=_SPEC)
    schema = require_object(spec, "schema", prefix=_SPEC)
    return _checked_size(json.dumps(schema), f"{_SPEC}schema")


def _checked_size(text: str, param: str) -> str:
    try:
        size = len(text.encode())
    except UnicodeEncodeError as error:  # a lone surrogate escaped in the JSON body
        raise BadRequest(f"'{param}' must be valid UTF-8 text", param) from error
    if size > MAX_CONSTRAINT_BYTES:
        raise BadRequest(f"'{param}' takes at most {MAX_CONSTRAINT_BYTES} bytes, got {size}", param)
    return text
