"""JSON Schema checks before conversion: unenforceable keywords, bounds, regex shorthands."""

from __future__ import annotations

from typing import Any

import pytest

from core.engine.schema_checks import check_schema, rewrite_patterns
from core.errors import InvalidRequest


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "minimum": 0},
        {"type": "object", "properties": {"a": {"type": "array", "uniqueItems": True}}},
        {"anyOf": [{"type": "string", "format": "email"}]},
        {"$defs": {"x": {"not": {"type": "null"}}}},
        {"type": "object", "minProperties": 1},
    ],
)
def test_unenforceable_keywords_are_refused_when_strict(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_schema(schema, "f")
    assert caught.value.param == "f"
    check_schema(schema, "f", strict=False)  # without strict they only describe


def test_property_names_and_enum_values_are_not_keywords() -> None:
    schema = {
        "type": "object",
        "properties": {"minimum": {"type": "integer"}, "not": {"enum": [{"maximum": 3}]}},
    }
    check_schema(schema, "f")


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "maxLength": 20_000},
        {"$ref": "https://example.invalid/s.json"},
        {"type": "string", "pattern": "^a{0,5000}$"},
    ],
)
def test_bounds_and_remote_refs_are_refused_strict_or_not(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        check_schema(schema, "f", strict=False)


@pytest.mark.parametrize(
    ("pattern", "spelled"),
    [
        ("^\\d{5}$", "^[0-9]{5}$"),
        ("\\w+\\s\\D", "[a-zA-Z0-9_]+[ \\t\\n\\r][^0-9]"),
        ("[\\d-]+", "[0-9-]+"),
        ("a\\.b\\\\d", "a\\.b\\\\d"),  # escaped dot, and an escaped backslash before d
    ],
)
def test_regex_shorthands_are_spelled_as_classes(pattern: str, spelled: str) -> None:
    schema = {"properties": {"p": {"type": "string", "pattern": pattern}}, "enum": ["\\d"]}
    rewritten = rewrite_patterns(schema)
    assert rewritten["properties"]["p"]["pattern"] == spelled
    assert rewritten["enum"] == ["\\d"]  # data stays as written
