"""Format detection and dispatch to the header reader of each model format."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from core.metadata.gguf_reader import read_gguf
from core.metadata.safetensors_reader import INDEX_NAME, SINGLE_NAME, read_safetensors
from core.metadata.types import HeaderInfo, ModelFormat

Reader = Callable[[Path], HeaderInfo]

READERS: dict[ModelFormat, Reader] = {
    ModelFormat.GGUF: read_gguf,
    ModelFormat.SAFETENSORS: read_safetensors,
}


def read_header(path: Path, fmt: ModelFormat) -> HeaderInfo:
    """Read a model's header metadata; raises InvalidModelFile when it is malformed."""
    return READERS[fmt](path)


def detect_format(path: Path) -> ModelFormat | None:
    """The format a path holds, judged by name (and contents, for a directory); None if neither."""
    if path.is_dir():
        if (path / INDEX_NAME).is_file() or (path / SINGLE_NAME).is_file():
            return ModelFormat.SAFETENSORS
        return None
    suffix = path.suffix.lower()
    if suffix == ".gguf":
        return ModelFormat.GGUF
    if suffix == ".safetensors":
        return ModelFormat.SAFETENSORS
    return None
