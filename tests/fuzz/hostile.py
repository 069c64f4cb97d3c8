"""Hostile inputs for the fuzz tests: edge integers, byte mutations and arbitrary JSON values."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import strategies as st

# Lengths and counts that sit on a boundary: empty, one, signed/unsigned limits, 2**53, max.
EDGE_U64 = (
    0,
    1,
    2,
    7,
    8,
    31,
    32,
    255,
    2**16,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**53,
    2**63 - 1,
    2**63,
    2**64 - 2,
    2**64 - 1,
)
EDGE_U32 = tuple(v for v in EDGE_U64 if v < 2**32)
u64s = st.sampled_from(EDGE_U64) | st.integers(0, 2**64 - 1)
u32s = st.sampled_from(EDGE_U32) | st.integers(0, 2**32 - 1)

# Numbers JSON can spell but Python's float cannot hold, and texts that encode badly.
EDGE_JSON: tuple[Any, ...] = (
    0,
    -1,
    2**31,
    2**32,
    2**63,
    2**64,
    -(2**63) - 1,
    10**400,
    -(10**400),
    1e308,
    float("inf"),
    float("-inf"),
    float("nan"),
    0.5,
    "",
    " ",
    "\x00",
    "\ud800",
    "a\ud800b",
    "\udcff",
    "../../etc/passwd",
    "9" * 5000,
    "json",
    True,
    False,
    None,
    [],
    {},
)
# Object keys with the same traps: digits past int()'s 4,300, half a surrogate pair, nothing.
EDGE_KEYS = ("", "0", "-1", "9" * 5000, "\ud800", "\x00", "__proto__")
json_keys = st.text(max_size=12) | st.sampled_from(EDGE_KEYS)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(EDGE_JSON)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_keys, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def mutated_bytes(draw: st.DrawFn, seed: bytes, *, max_edits: int = 4) -> bytes:
    """seed after a few edits: flipped bits, overwritten length fields, cuts and insertions."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, max_edits))):
        where = draw(st.integers(0, max(len(data) - 1, 0)))
        edit = draw(st.sampled_from(("flip", "u64", "u32", "byte", "cut", "insert", "delete")))
        if edit == "flip" and data:
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif edit == "u64":
            data[where : where + 8] = struct.pack("<Q", draw(u64s))
        elif edit == "u32":
            data[where : where + 4] = struct.pack("<I", draw(u32s))
        elif edit == "byte" and data:
            data[where] = draw(st.integers(0, 255))
        elif edit == "cut":
            del data[where:]
        elif edit == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[where : where + draw(st.integers(1, 16))]
    return bytes(data)


@st.composite
def mutated_json(draw: st.DrawFn, seed: Any, *, names: tuple[str, ...] = ()) -> Any:
    """A copy of the JSON document `seed` with a few edits: a value anywhere in it replaced
    (by an edge value half the time) or removed, or a member added under one of `names`."""
    doc = _copy(seed)
    for _ in range(draw(st.integers(1, 3))):
        slots = _slots(doc)
        edit = draw(st.sampled_from(("replace", "replace", "delete", "add")))
        if not slots or edit == "add":
            _add(draw, doc, names)
            continue
        container, key = draw(st.sampled_from(slots))
        if edit == "replace":
            container[key] = _fresh(draw)
        else:
            del container[key]
    return doc


def _add(draw: st.DrawFn, doc: Any, names: tuple[str, ...]) -> None:
    containers = [doc, *(v for c, k in _slots(doc) if isinstance(v := c[k], dict | list))]
    target = draw(st.sampled_from(containers))
    if isinstance(target, dict):
        key = draw(st.sampled_from(names) | json_keys) if names else draw(json_keys)
        target[key] = _fresh(draw)
    elif isinstance(target, list):
        target.append(_fresh(draw))


def _fresh(draw: st.DrawFn) -> Any:
    """A value to put in a document (edited in place later, so never EDGE_JSON's own [] or {})."""
    return _copy(draw(st.sampled_from(EDGE_JSON) | json_values))


def _slots(doc: Any) -> list[tuple[Any, Any]]:
    """(container, key) for every value nested in doc, however deep."""
    found: list[tuple[Any, Any]] = []
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict | list):
            keys = list(item) if isinstance(item, dict) else range(len(item))
            found.extend((item, key) for key in keys)
            stack.extend(item[key] for key in keys)
    return found


def _copy(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _copy(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_copy(v) for v in doc]
    return doc
