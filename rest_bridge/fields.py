"""Typed reads of JSON request fields; every error is a 400 naming the field."""

from __future__ import annotations

import math
from typing import Any

from minerva.v1.limits import Range

from rest_bridge.errors import BadRequest


def type_name(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def get_str(
    body: dict[str, Any], key: str, *, required: bool = False, prefix: str = ""
) -> str | None:
    """`prefix` names the object that holds `key` in a nested param ("response_format.")."""
    value, param = body.get(key), prefix + key
    if value is None:
        if required:
            raise BadRequest(f"'{param}' is required", param)
        return None
    if not isinstance(value, str):
        raise BadRequest(f"'{param}' must be a string, got {type_name(value)}", param)
    if required and not value:
        raise BadRequest(f"'{param}' must not be empty", param)
    return value


def get_bool(body: dict[str, Any], key: str, *, prefix: str = "") -> bool | None:
    value, param = body.get(key), prefix + key
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"'{param}' must be a boolean, got {type_name(value)}", param)
    return value


def require_object(body: dict[str, Any], key: str, *, prefix: str = "") -> dict[str, Any]:
    value, param = body.get(key), prefix + key
    if value is None:
        raise BadRequest(f"'{param}' is required", param)
    if not isinstance(value, dict):
        raise BadRequest(f"'{param}' must be an object, got {type_name(value)}", param)
    return value


def get_number(body: dict[str, Any], key: str, bounds: Range | None = None) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"'{key}' must be a number, got {type_name(value)}", key)
    if not _finite(value):
        raise BadRequest(f"'{key}' must be a finite number", key)
    if bounds is not None and not bounds.admits_float32(value):
        raise BadRequest(f"'{key}' must be a number in {bounds}, got {value:g}", key)
    return float(value)


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def get_int(
    body: dict[str, Any], key: str, low: int | None = None, high: int | None = None
) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"'{key}' must be an integer, got {type_name(value)}", key)
    check_range(key, value, low, high)
    return value


def check_range(key: str, value: float, low: float | None, high: float | None) -> None:
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = (
            f"between {low} and {high}"
            if low is not None and high is not None
            else (f">= {low}" if low is not None else f"<= {high}")
        )
        raise BadRequest(f"'{key}' must be {bounds}, got {value}", key)
