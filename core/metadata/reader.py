"""Format detection and dispatch to the header reader of each model format."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from core.errors import InvalidModelFile
from core.metadata.gguf_reader import read_gguf
from core.metadata.safetensors_reader import INDEX_NAME, SINGLE_NAME, read_safetensors
from core.metadata.types import HeaderInfo, ModelFormat

Reader = Callable[[Path], HeaderInfo]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth")
PICKLE_REFUSAL = "unsupported: pickle checkpoints are not loaded; convert to SafeTensors"


def refuse_pickle(path: Path) -> HeaderInfo:
    """Pickle checkpoints run code when unpickled: they are never opened, only named."""
    raise InvalidModelFile(f"{path.name}: {PICKLE_REFUSAL}")


READERS: dict[ModelFormat, Reader] = {
    ModelFormat.GGUF: read_gguf,
    ModelFormat.SAFETENSORS: read_safetensors,
    ModelFormat.PICKLE: refuse_pickle,
}


def read_header(path: Path, fmt: ModelFormat) -> HeaderInfo:
    """Read a model's header metadata; raises InvalidModelFile when it is malformed."""
    return READERS[fmt](path)


def detect_format(path: Path) -> ModelFormat | None:
    """The format a path holds, judged by name (and contents, for a directory); None if neither."""
    if path.is_dir():
        if (path / INDEX_NAME).is_file() or (path / SINGLE_NAME).is_file():
            return ModelFormat.SAFETENSORS
        if any(p.suffix.lower() in PICKLE_SUFFIXES for p in path.iterdir() if p.is_file()):
            return ModelFormat.PICKLE
        return None
    suffix = path.suffix.lower()
    if suffix == ".gguf":
        return ModelFormat.GGUF
    if suffix == ".safetensors":
        return ModelFormat.SAFETENSORS
    if suffix in PICKLE_SUFFIXES:
        return ModelFormat.PICKLE
    return None
