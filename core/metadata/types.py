"""Frozen domain types for header metadata."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

# Layer, embedding, vocabulary and context sizes travel as protobuf uint32: a header claiming
# more is lying, and the readers report such a size as unknown (0).
MAX_SIZE_FIELD = 2**32 - 1


class ModelFormat(enum.Enum):
    GGUF = "gguf"
    SAFETENSORS = "safetensors"
    PICKLE = "pickle"  # listed with an error; never opened


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """What Minerva knows about a model without reading its weights. 0 / "" means unknown."""

    format: ModelFormat
    architecture: str = ""
    quantization: str = ""
    file_size_bytes: int = 0
    tensor_count: int = 0
    layer_count: int = 0
    embedding_length: int = 0
    vocab_size: int = 0
    context_length: int = 0
    parameter_count: int = 0
    has_chat_template: bool = False
    name: str = ""


@dataclass(frozen=True, slots=True)
class HeaderInfo:
    """Result of reading one model's headers: metadata plus what the engine needs later."""

    metadata: ModelMetadata
    # The model's own Jinja chat template (GGUF `tokenizer.chat_template`), if any.
    chat_template: str | None = None
    # Scalar (non-array) header values, e.g. GGUF KV pairs; arrays are never materialized.
    scalars: dict[str, str | int | float | bool] = field(default_factory=dict)
    # The header's arrays (e.g. tokenizer tables) by key: their lengths only.
    array_lengths: dict[str, int] = field(default_factory=dict)
    # Short integer arrays by key, with their values (GGUF per-layer counts).
    small_arrays: dict[str, tuple[int, ...]] = field(default_factory=dict)
