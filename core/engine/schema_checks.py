"""JSON Schemas checked before they become grammars: what the converter cannot enforce is refused
(never a grammar that lets non-conforming output through), bounds that would blow up the grammar
are refused, and regex shorthands the converter mistranslates are rewritten."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from core.errors import InvalidRequest

MAX_SCHEMA_BOUND = 1_000  # minLength, maxItems, ... and {m,n} in patterns
_BOUND_KEYS = frozenset({"minLength", "maxLength", "minItems", "maxItems"})
_PATTERN_BOUND = re.compile(r"\{(\d+)(?:,(\d*))?\}")
# Keywords llama-cpp-python's converter reads nothing of: a schema using one would be followed
# only in part.
UNENFORCED = frozenset(
    {
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "minProperties",
        "maxProperties",
        "patternProperties",
        "propertyNames",
        "dependentRequired",
        "dependentSchemas",
        "dependencies",
        "unevaluatedProperties",
        "unevaluatedItems",
        "not",
        "if",
        "then",
        "else",
    }
)
# String formats the converter turns into a grammar; any other would be plain text.
FORMATS = frozenset(
    {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}
)
# Keywords whose value is one schema, a list of schemas, or a map of names to schemas.
_ONE = ("items", "additionalProperties", "additionalItems")
_LIST = ("anyOf", "oneOf", "allOf", "prefixItems")
_MAP = ("properties", "$defs", "definitions")
# Regex shorthands, outside and inside [...] classes.
_SHORTHANDS = {"d": "[0-9]", "w": "[a-zA-Z0-9_]", "s": "[ \\t\\n\\r]"}
_NEGATED = {"D": "[^0-9]", "W": "[^a-zA-Z0-9_]", "S": "[^ \\t\\n\\r]"}
_IN_CLASS = {"d": "0-9", "w": "a-zA-Z0-9_", "s": " \\t\\n\\r"}


def check_schema(schema: object, field: str, *, strict: bool = True) -> None:
    """InvalidRequest naming `field` for what would be too large, and (strict) for keywords
    that cannot be enforced; without strict they only describe, as in OpenAI's non-strict
    function schemas."""
    for node in _schemas(schema):
        for key, value in node.items():
            _check_bounds(key, value, field)
            if strict:
                _check_enforceable(key, value, field)


def rewrite_patterns(schema: Any) -> Any:
    """A copy of the schema with \\d, \\w, \\s (and \\D, \\W, \\S) spelled as classes in every
    pattern: the converter would write them as invalid grammar escapes."""
    if isinstance(schema, list):
        return [rewrite_patterns(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "pattern" and isinstance(value, str):
            out[key] = _spelled(value)
        elif key in ("enum", "const", "default", "examples"):
            out[key] = value  # data, not schemas
        else:
            out[key] = rewrite_patterns(value)
    return out


def _schemas(schema: object) -> Iterator[dict[str, Any]]:
    """Every (sub)schema, walking keywords only: property names and enum values are data."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        yield node
        for key in _ONE:
            stack.append(node.get(key))
        for key in _LIST:
            value = node.get(key)
            if isinstance(value, list):
                stack.extend(value)
        for key in _MAP:
            value = node.get(key)
            if isinstance(value, dict):
                stack.extend(value.values())


def _check_enforceable(key: str, value: object, field: str) -> None:
    if key in UNENFORCED:
        raise InvalidRequest(
            f"{field}: the keyword '{key}' cannot be enforced in generated output; "
            "remove it (or check it in your code)",
            param=field,
        )
    if key == "format" and value not in FORMATS:
        raise InvalidRequest(
            f"{field}: format {value!r} cannot be enforced (supported: {', '.join(sorted(FORMATS))})",
            param=field,
        )


def _check_bounds(key: str, value: object, field: str) -> None:
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


def _spelled(pattern: str) -> str:
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            table = _IN_CLASS if in_class else {**_SHORTHANDS, **_NEGATED}
            out.append(table.get(nxt, c + nxt))
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
        elif c == "]" and in_class:
            in_class = False
        out.append(c)
        i += 1
    return "".join(out)
