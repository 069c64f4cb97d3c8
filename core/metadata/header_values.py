"""A model file's header key/values as JSON-ready values, arrays in full only when asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf

from core.errors import InvalidModelFile
from core.metadata.types import HeaderInfo, ModelFormat


def header_values(path: Path, header: HeaderInfo, with_arrays: bool) -> dict[str, Any]:
    """Scalars from the cached header; each array as [] unless `with_arrays`, which reads them
    from the file (seconds for a large vocabulary): blocking, run it off the event loop."""
    values: dict[str, Any] = dict(header.scalars)
    if not with_arrays or header.metadata.format is not ModelFormat.GGUF:
        values.update({key: [] for key in header.array_lengths})
        return dict(sorted(values.items()))
    try:
        reader = gguf.GGUFReader(path, "r")
        for key in header.array_lengths:
            found = reader.fields.get(key)
            values[key] = _plain(found.contents()) if found is not None else []
    except (OSError, ValueError) as exc:
        raise InvalidModelFile(f"{path.name}: could not read its header arrays: {exc}") from exc
    return dict(sorted(values.items()))


def _plain(value: Any) -> Any:
    """numpy scalars and bytes as JSON values."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value.item() if hasattr(value, "item") else value
