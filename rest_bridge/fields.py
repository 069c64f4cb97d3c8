"""Typed reads of JSON request fields; every error is a 400 naming the field."""

from __future__ import annotations

import math
from typing import Any

from rest_bridge.errors import BadRequest


def type_name(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def get_str(body: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise BadRequest(f"'{key}' is required", key)
        return None
    if not isinstance(value, str):
        raise BadRequest(f"'{key}' must be a string, got {type_name(value)}", key)
    if required and not value:
        raise BadRequest(f"'{key}' must not be empty", key)
    return value


def get_bool(body: dict[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"'{key}' must be a boolean, got {type_name(value)}", key)
    return value


def get_number(
    body: dict[str, Any], key: str, low: float | None = None, high: float | None = None
) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadRequest(f"'{key}' must be a number, got {type_name(value)}", key)
    check_range(key, value, low, high)
    return float(value)


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
