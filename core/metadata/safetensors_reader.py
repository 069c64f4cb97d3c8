"""SafeTensors header reader: single files and sharded directories, plus config.json facts."""

from __future__ import annotations

import json
import os
import stat
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from core.errors import InvalidModelFile
from core.metadata.types import MAX_SIZE_FIELD, HeaderInfo, ModelFormat, ModelMetadata

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
TOKENIZER_CONFIG_NAME = "tokenizer_config.json"
TEMPLATE_FILE_NAME = "chat_template.jinja"
# Header scalar holding config.json's architectures[0] (the class the importer allow-lists).
HF_ARCHITECTURE_KEY = "config.architectures"
# The safetensors library refuses headers above 100 MB; so do we, before reading one.
MAX_HEADER_BYTES = 100 << 20
MAX_JSON_FILE_BYTES = 64 << 20
# The safetensors library counts elements in a 64-bit int (usize) and rejects shapes past it;
# stopping there also keeps a hostile shape from costing seconds of big-int products.
MAX_ELEMENTS = 2**64 - 1
# Bits per element: sub-byte float formats (F4, F6) pack several elements per byte.
DTYPE_BITS: dict[str, int] = {
    **dict.fromkeys(("F4",), 4),
    **dict.fromkeys(("F6_E2M3", "F6_E3M2"), 6),
    **dict.fromkeys(("BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0"), 8),
    **dict.fromkeys(("F8_E4M3FNUZ", "F8_E5M2FNUZ"), 8),
    **dict.fromkeys(("I16", "U16", "F16", "BF16"), 16),
    **dict.fromkeys(("I32", "U32", "F32"), 32),
    **dict.fromkeys(("I64", "U64", "F64", "C64"), 64),
}

Scalar = str | int | float | bool


@dataclass(frozen=True, slots=True)
class TensorEntry:
    """Where one tensor's bytes lie: validated against its file, never read here."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int  # from the start of the file
    nbytes: int


@dataclass
class _Summary:
    """What the tensors of one or more files add up to."""

    tensors: dict[str, TensorEntry] = field(default_factory=dict)
    tensor_count: int = 0
    parameters: int = 0
    file_size: int = 0
    bytes_by_dtype: Counter[str] = field(default_factory=Counter)
    scalars: dict[str, Scalar] = field(default_factory=dict)

    @property
    def tensor_names(self) -> set[str]:
        return set(self.tensors)

    def add(self, other: _Summary) -> None:
        self.tensors.update(other.tensors)
        self.tensor_count += other.tensor_count
        self.parameters += other.parameters
        self.file_size += other.file_size
        self.bytes_by_dtype.update(other.bytes_by_dtype)
        self.scalars.update(other.scalars)


def _fail(path: Path, what: str) -> InvalidModelFile:
    return InvalidModelFile(f"{path}: invalid SafeTensors model: {what}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _open_regular(path: Path) -> tuple[BinaryIO, int]:
    """Open a regular file (not missing, a FIFO or a directory); return it and its size."""
    try:
        # O_NONBLOCK: opening a FIFO must not hang; regular files ignore the flag.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _fail(path, f"cannot open: {exc.strerror or exc}") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise _fail(path, "not a regular file")
    return os.fdopen(fd, "rb"), st.st_size


def _read_header_json(path: Path) -> tuple[object, int, int]:
    """Return the parsed JSON header, the file size and the size of the data section."""
    fh, size = _open_regular(path)
    try:
        with fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise _fail(path, f"truncated: {size} bytes, no 8-byte header length")
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER_BYTES:
                raise _fail(path, f"header length {length} exceeds {MAX_HEADER_BYTES} bytes")
            if 8 + length > size:
                raise _fail(path, f"header length {length} runs past the end of the file")
            raw = fh.read(length)
    except OSError as exc:
        raise _fail(path, f"read failed: {exc.strerror or exc}") from exc
    if len(raw) != length:
        raise _fail(path, "file shrank while reading the header")
    return _parse_json(path, raw, "header"), size, size - 8 - length


def _parse_json(path: Path, raw: bytes, what: str) -> object:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _fail(path, f"{what} is not valid JSON: {exc}") from None
    _check_surrogates(path, raw, doc, what)
    return doc


def _check_surrogates(path: Path, raw: bytes, doc: object, what: str) -> None:
    """JSON may escape half a UTF-16 pair (\\ud800) alone, which no text holds (serde_json, and
    so the safetensors library, refuses it); it would fail wherever it is sent on. Only
    documents holding such an escape are walked again."""
    if b"\\ud" not in raw.lower():
        return
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(path, f"{what} holds a lone UTF-16 surrogate (not text)") from None


def _tensor_nbytes(path: Path, name: str, entry: object, data_size: int) -> tuple[str, int, int]:
    """Validate one tensor entry; return (dtype, element count, byte count)."""
    if not isinstance(entry, dict):
        raise _fail(path, f"tensor {name!r} entry is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise _fail(path, f"tensor {name!r} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_int(d) for d in shape):
        raise _fail(path, f"tensor {name!r} shape {shape!r} is not a list of non-negative ints")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_int, offsets))):
        raise _fail(path, f"tensor {name!r} data_offsets {offsets!r} is not [begin, end]")
    begin, end = offsets
    if not begin <= end <= data_size:
        raise _fail(
            path,
            f"tensor {name!r} data_offsets [{begin}, {end}] lie outside "
            f"the {data_size}-byte data section",
        )
    count = _element_count(shape)
    if count is None:
        raise _fail(path, f"tensor {name!r} shape {shape!r} has more than 2**64 elements")
    bits = count * DTYPE_BITS[dtype]
    if bits % 8 or end - begin != bits // 8:
        raise _fail(
            path,
            f"tensor {name!r} spans {end - begin} bytes, but {dtype} {shape} "
            f"needs {_bytes_text(bits)}",
        )
    return dtype, count, end - begin


def _element_count(shape: list[int]) -> int | None:
    """The product of shape, or None past MAX_ELEMENTS (stopping there: never a huge product)."""
    count = 1
    for dim in shape:
        count *= dim
        if count > MAX_ELEMENTS:
            return None
    return count


def _bytes_text(bits: int) -> str:
    """bits as a byte count, exact ("1.5" for 12 bits) whatever its size (no float overflow)."""
    whole, rest = divmod(bits, 8)
    return f"{whole}.{rest * 125:03d}".rstrip("0") if rest else str(whole)


def _read_file(path: Path) -> _Summary:
    header, size, data_size = _read_header_json(path)
    if not isinstance(header, dict):
        raise _fail(path, "header is not a JSON object")
    summary = _Summary(file_size=size)
    data_start = size - data_size
    for name, entry in header.items():
        if name == "__metadata__":
            summary.scalars.update(_metadata_scalars(path, entry))
            continue
        dtype, count, nbytes = _tensor_nbytes(path, name, entry, data_size)
        shape, (begin, _end) = entry["shape"], entry["data_offsets"]
        summary.tensors[name] = TensorEntry(path, dtype, tuple(shape), data_start + begin, nbytes)
        summary.tensor_count += 1
        summary.parameters += count
        summary.bytes_by_dtype[dtype] += nbytes
    return summary


def _metadata_scalars(path: Path, entry: object) -> dict[str, Scalar]:
    if not isinstance(entry, dict):
        raise _fail(path, "__metadata__ is not an object")
    return {k: v for k, v in entry.items() if isinstance(v, str | int | float | bool)}


def _read_small(path: Path) -> bytes:
    """Read a side file (config, template) that has no business being large."""
    fh, size = _open_regular(path)
    with fh:
        if size > MAX_JSON_FILE_BYTES:
            raise _fail(path, f"{size} bytes is too large for a configuration file")
        try:
            # The size, not the cap: read(n) allocates n bytes before it reads any.
            return fh.read(size)
        except OSError as exc:
            raise _fail(path, f"read failed: {exc.strerror or exc}") from exc


def load_json_file(path: Path) -> object:
    return _parse_json(path, _read_small(path), "file")


def _shard_path(directory: Path, index: Path, name: str) -> Path:
    """Resolve a weight_map entry, refusing anything that would leave the directory."""
    candidate = Path(name)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise _fail(index, f"shard {name!r} points outside the model directory")
    try:
        inside = (directory / candidate).resolve().is_relative_to(directory.resolve())
    # RuntimeError: a symlink loop (Python 3.11); ValueError: a name the OS cannot take.
    except (OSError, RuntimeError, ValueError) as exc:
        raise _fail(index, f"shard {name!r} cannot be resolved: {exc}") from exc
    if not inside:
        raise _fail(index, f"shard {name!r} resolves outside the model directory")
    return directory / candidate


def _read_index(index: Path) -> tuple[dict[str, list[str]], dict[str, Scalar]]:
    """The index's tensor names grouped by shard file name, and its scalar metadata."""
    doc = load_json_file(index)
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise _fail(index, "no weight_map object mapping tensor names to shard files")
    by_shard: dict[str, list[str]] = {}
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or not shard or "\x00" in shard:
            raise _fail(index, f"shard name {shard!r} is not a file name")
        by_shard.setdefault(shard, []).append(tensor)
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    return by_shard, _metadata_scalars(index, meta) if isinstance(meta, dict) else {}


def _read_sharded(directory: Path) -> _Summary:
    index = directory / INDEX_NAME
    by_shard, scalars = _read_index(index)
    total = _Summary()
    for shard_name in sorted(by_shard):
        summary = _read_file(_shard_path(directory, index, shard_name))
        missing = [t for t in by_shard[shard_name] if t not in summary.tensor_names]
        if missing:
            raise _fail(index, f"tensor {missing[0]!r} is not in shard {shard_name!r}")
        repeated = total.tensor_names & summary.tensor_names
        if repeated:
            raise _fail(index, f"tensor {min(repeated)!r} appears in more than one shard")
        total.add(summary)
    total.scalars.update(scalars)
    return total


def _config_int(config: dict[str, object], key: str) -> int:
    """A non-negative int from config.json, also looked up in a multimodal `text_config`."""
    value = config.get(key)
    text_config = config.get("text_config")
    if value is None and isinstance(text_config, dict):
        value = text_config.get(key)
    return value if isinstance(value, int) and _is_int(value) and value <= MAX_SIZE_FIELD else 0


def _architecture(config: dict[str, object]) -> str:
    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type:
        return model_type
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        return architectures[0]
    return ""


def read_config(directory: Path) -> dict[str, object]:
    path = directory / CONFIG_NAME
    if not path.exists():
        return {}
    config = load_json_file(path)
    if not isinstance(config, dict):
        raise _fail(path, "config.json is not a JSON object")
    return config


def chat_template(directory: Path) -> str | None:
    """tokenizer_config.json `chat_template` (a string, or named templates: "default")."""
    path = directory / TOKENIZER_CONFIG_NAME
    template: object = None
    if path.exists():
        doc = load_json_file(path)
        template = doc.get("chat_template") if isinstance(doc, dict) else None
        if isinstance(template, list):
            template = next(
                (
                    t.get("template")
                    for t in template
                    if isinstance(t, dict) and t.get("name") == "default"
                ),
                None,
            )
    jinja = directory / TEMPLATE_FILE_NAME
    if not template and jinja.exists():
        # Newer checkpoints keep the template in its own file instead.
        template = _read_small(jinja).decode("utf-8", errors="replace")
    return template if isinstance(template, str) and template else None


def _quantization(bytes_by_dtype: Counter[str]) -> str:
    ordered = sorted(bytes_by_dtype.items(), key=lambda item: (-item[1], item[0]))
    return "+".join(dtype for dtype, _ in ordered)


def _weights(path: Path) -> tuple[_Summary, Path]:
    """Read the weights' headers; return them and the directory holding config files."""
    if not path.is_dir():
        return _read_file(path), path.parent
    if (path / INDEX_NAME).exists():
        return _read_sharded(path), path
    if (path / SINGLE_NAME).exists():
        return _read_file(path / SINGLE_NAME), path
    raise _fail(path, f"directory holds neither {INDEX_NAME} nor {SINGLE_NAME}")


def tensor_entries(path: Path) -> tuple[dict[str, TensorEntry], Path]:
    """Every tensor of a SafeTensors model (file or directory) by name, and the directory holding
    its config files; InvalidModelFile if malformed."""
    try:
        summary, directory = _weights(path)
    except OSError as exc:
        raise _fail(path, f"cannot read: {exc.strerror or exc}") from exc
    return summary.tensors, directory


def read_safetensors(path: Path) -> HeaderInfo:
    """Read a SafeTensors model's metadata (file or directory); InvalidModelFile if malformed."""
    try:
        summary, directory = _weights(path)
        config = read_config(directory)
        template = chat_template(directory)
    except OSError as exc:  # e.g. a permission error while probing for side files
        raise _fail(path, f"cannot read: {exc.strerror or exc}") from exc
    name = config.get("_name_or_path")
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        summary.scalars[HF_ARCHITECTURE_KEY] = architectures[0]
    metadata = ModelMetadata(
        format=ModelFormat.SAFETENSORS,
        architecture=_architecture(config),
        quantization=_quantization(summary.bytes_by_dtype),
        file_size_bytes=summary.file_size,
        tensor_count=summary.tensor_count,
        layer_count=_config_int(config, "num_hidden_layers"),
        embedding_length=_config_int(config, "hidden_size"),
        vocab_size=_config_int(config, "vocab_size"),
        context_length=_config_int(config, "max_position_embeddings"),
        parameter_count=summary.parameters,
        has_chat_template=template is not None,
        name=name if isinstance(name, str) else "",
    )
    return HeaderInfo(metadata=metadata, chat_template=template, scalars=summary.scalars)
