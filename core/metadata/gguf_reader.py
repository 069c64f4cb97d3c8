"""Lean GGUF header reader: KV pairs and tensor infos, arrays skipped (short integer ones kept),
hostile input rejected. Byte-level reading: gguf_cursor; the vocabulary: gguf_vocab."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import gguf

from core.metadata.gguf_cursor import (
    SCALARS,
    VT,
    Cursor,
    Scalar,
    open_header,
    read_preamble,
    read_value,
    skip_array,
)
from core.metadata.types import MAX_SIZE_FIELD, HeaderInfo, ModelFormat, ModelMetadata

DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
# Integer arrays this short are read (per-layer counts: llama.cpp allows 512 layers).
MAX_LAYER_VALUES = 512

_SMALL_ARRAY_ITEMS = {
    VT.UINT32: SCALARS[VT.UINT32],
    VT.INT32: SCALARS[VT.INT32],
    VT.BOOL: SCALARS[VT.BOOL],
}
_TENSOR_TYPES = {int(t): t for t in gguf.GGMLQuantizationType}
_FILE_TYPES = {int(t): t for t in gguf.LlamaFileType}


@dataclass(frozen=True, slots=True)
class _Tensor:
    name: str
    dims: tuple[int, ...]
    ggml_type: gguf.GGMLQuantizationType
    offset: int


def _read_kvs(
    cur: Cursor, kv_count: int
) -> tuple[dict[str, Scalar], dict[str, int], dict[str, tuple[int, ...]]]:
    """Read every KV pair: scalars by key, the lengths of the arrays, and the values of the
    short integer ones (per-layer counts); other arrays are skipped."""
    scalars: dict[str, Scalar] = {}
    lengths: dict[str, int] = {}
    small: dict[str, tuple[int, ...]] = {}
    seen: set[str] = set()
    for index in range(kv_count):
        start = cur.pos
        key = cur.name(f"key of KV pair {index}")
        if key in seen:
            raise cur.fail(f"duplicate key {key!r}", start)
        seen.add(key)
        vtype = cur.u32(f"value type of {key!r}")
        if vtype == VT.ARRAY:
            values = _small_int_array(cur, key)
            if values is None:
                lengths[key] = skip_array(cur, key)
            else:
                lengths[key], small[key] = len(values), values
        elif (value := read_value(cur, vtype, key)) is not None:
            scalars[key] = value
    return scalars, lengths, small


def _small_int_array(cur: Cursor, key: str) -> tuple[int, ...] | None:
    """An array of at most MAX_LAYER_VALUES (u)int32 or bool items, read; else None with the
    cursor left where it was."""
    start = cur.pos
    item_type = cur.u32(f"array type of {key!r}")
    count = cur.u64(f"array length of {key!r}")
    fmt = _SMALL_ARRAY_ITEMS.get(item_type)
    if fmt is None or count > MAX_LAYER_VALUES:
        cur.pos = start
        return None
    return tuple(int(cur.unpack(fmt, f"array {key!r}")[0]) for _ in range(count))


def _read_tensor(cur: Cursor, index: int) -> _Tensor:
    start = cur.pos
    name = cur.name(f"name of tensor {index}")
    n_dims = cur.u32(f"n_dims of tensor {name!r}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise cur.fail(f"tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS})", start)
    dims = tuple(cur.u64(f"dimensions of tensor {name!r}") for _ in range(n_dims))
    type_id = cur.u32(f"type of tensor {name!r}")
    ggml_type = _TENSOR_TYPES.get(type_id)
    if ggml_type is None or ggml_type not in gguf.GGML_QUANT_SIZES:
        raise cur.fail(f"tensor {name!r} has unknown type {type_id}", start)
    offset = cur.u64(f"data offset of tensor {name!r}")
    return _Tensor(name, dims, ggml_type, offset)


def _read_tensors(cur: Cursor, tensor_count: int) -> list[_Tensor]:
    tensors = [_read_tensor(cur, i) for i in range(tensor_count)]
    if len({t.name for t in tensors}) != len(tensors):
        raise cur.fail("duplicate tensor names")
    return tensors


def _alignment(cur: Cursor, scalars: dict[str, Scalar]) -> int:
    value = scalars.get(gguf.Keys.General.ALIGNMENT, DEFAULT_ALIGNMENT)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value & (value - 1):
        raise cur.fail(f"general.alignment {value!r} is not a positive power of two")
    return value


def _check_tensor_data(cur: Cursor, tensors: list[_Tensor], alignment: int) -> None:
    """Every tensor's bytes must lie inside the file, at an aligned offset."""
    data_start = -(-cur.pos // alignment) * alignment
    for t in tensors:
        block_size, type_size = gguf.GGML_QUANT_SIZES[t.ggml_type]
        if t.dims[0] % block_size:
            raise cur.fail(
                f"tensor {t.name!r} row of {t.dims[0]} is not a multiple of "
                f"the {t.ggml_type.name} block size {block_size}"
            )
        nbytes = math.prod(t.dims) // block_size * type_size
        if t.offset % alignment:
            raise cur.fail(f"tensor {t.name!r} data offset {t.offset} is not {alignment}-aligned")
        if data_start + t.offset + nbytes > cur.size:
            raise cur.fail(
                f"tensor {t.name!r} data ({nbytes} bytes at data offset {t.offset}) "
                f"runs past the end of the file ({cur.size} bytes)"
            )


def _quantization(scalars: dict[str, Scalar], tensors: list[_Tensor]) -> str:
    """general.file_type as llama.cpp names it, else the most common type of the matrices."""
    file_type = scalars.get(gguf.Keys.General.FILE_TYPE)
    if isinstance(file_type, int) and file_type in _FILE_TYPES:
        name = _FILE_TYPES[file_type].name
        if name != "GUESSED":
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    counts = Counter(t.ggml_type.name for t in tensors if len(t.dims) >= 2)
    return counts.most_common(1)[0][0] if counts else ""


def _int(scalars: dict[str, Scalar], key: str) -> int:
    """A size from the header, 0 (unknown) unless it is an int in 1..MAX_SIZE_FIELD."""
    value = scalars.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return value if 0 < value <= MAX_SIZE_FIELD else 0


def _str(scalars: dict[str, Scalar], key: str) -> str:
    value = scalars.get(key)
    return value if isinstance(value, str) else ""


def _build(
    size: int,
    scalars: dict[str, Scalar],
    lengths: dict[str, int],
    small: dict[str, tuple[int, ...]],
    tensors: list[_Tensor],
) -> HeaderInfo:
    arch = _str(scalars, gguf.Keys.General.ARCHITECTURE)
    template = _str(scalars, gguf.Keys.Tokenizer.CHAT_TEMPLATE)
    tokens = lengths.get(gguf.Keys.Tokenizer.LIST, 0)
    vocab = _int(scalars, f"{arch}.vocab_size") or (tokens if tokens <= MAX_SIZE_FIELD else 0)
    metadata = ModelMetadata(
        format=ModelFormat.GGUF,
        architecture=arch,
        quantization=_quantization(scalars, tensors),
        file_size_bytes=size,
        tensor_count=len(tensors),
        layer_count=_int(scalars, f"{arch}.block_count"),
        embedding_length=_int(scalars, f"{arch}.embedding_length"),
        vocab_size=vocab,
        context_length=_int(scalars, f"{arch}.context_length"),
        parameter_count=sum(math.prod(t.dims) for t in tensors),
        has_chat_template=bool(template),
        name=_str(scalars, gguf.Keys.General.NAME),
    )
    return HeaderInfo(
        metadata=metadata,
        chat_template=template or None,
        scalars=scalars,
        array_lengths=lengths,
        small_arrays=small,
    )


def read_gguf(path: Path) -> HeaderInfo:
    """Read a GGUF file's metadata from its header; raise InvalidModelFile on anything malformed."""
    with open_header(path) as cur:
        tensor_count, kv_count = read_preamble(cur)
        scalars, lengths, small = _read_kvs(cur, kv_count)
        tensors = _read_tensors(cur, tensor_count)
        _check_tensor_data(cur, tensors, _alignment(cur, scalars))
    return _build(cur.size, scalars, lengths, small, tensors)
