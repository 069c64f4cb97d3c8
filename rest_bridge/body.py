"""Request bodies -> JSON objects, refusing bodies nested too deeply before json.loads recurses."""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from rest_bridge.errors import BadRequest
from rest_bridge.fields import type_name

# Deeper than any real request (a JSON Schema in response_format included); json.loads recurses
# once per level and raises RecursionError (a 500) near 1,000.
MAX_NESTING = 128
# JSON strings, cut out first so that brackets inside them do not count.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# Then only brackets are kept, as steps + 1: an opening one 2, a closing one 0.
_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body."""
    check_nesting(raw)
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(f"request body is not valid JSON: {error}") from error
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, got {type_name(body)}")
    _check_surrogates(raw, body)
    return body


def _check_surrogates(raw: bytes, body: dict[str, Any]) -> None:
    """JSON may escape half a UTF-16 pair (\\ud800) alone; such a string is no text and would
    fail wherever it is encoded. Only bodies holding such an escape are re-checked."""
    if b"\\ud" not in raw.lower():
        return
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as error:
        raise BadRequest("request body holds an invalid character (a lone surrogate)") from error


def check_nesting(raw: bytes) -> None:
    # A body with fewer brackets than the limit cannot nest past it: most skip the scan.
    if raw.count(b"[") + raw.count(b"{") > MAX_NESTING and nesting_depth(raw) > MAX_NESTING:
        raise BadRequest(f"request body is nested too deeply (more than {MAX_NESTING} levels)")


def nesting_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in `raw`, counted without recursion or a Python loop
    per byte. Malformed JSON may count wrong, and json.loads refuses it anyway."""
    steps = _STRING.sub(b"", raw).translate(_STEPS, _NOT_BRACKETS)
    return max(accumulate(step - 1 for step in steps), default=0)
