"""Lean GGUF header reader: KV pairs and tensor infos, arrays skipped, hostile input rejected."""

from __future__ import annotations

import math
import os
import stat
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import gguf

from core.errors import InvalidModelFile
from core.metadata.types import MAX_SIZE_FIELD, HeaderInfo, ModelFormat, ModelMetadata

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
# Smallest possible encodings, used to reject counts that cannot fit in the file.
MIN_KV_BYTES = 8 + 4 + 1  # empty key, value type, one-byte value
MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8  # empty name, n_dims, one dim, type, offset
HEADER_BYTES = 4 + 4 + 8 + 8  # magic, version, tensor_count, kv_count
# Most headers (vocabulary included) fit in a few MiB; the buffer doubles when they don't.
FIRST_READ_BYTES = 4 << 20
# Real headers stay far below these (a 256k vocabulary with merges is ~20 MiB); beyond them a
# multi-GB file could make us buffer gigabytes on the word of a length field.
MAX_HEADER_BYTES = 256 << 20
MAX_TENSORS = 1 << 20
MAX_KVS = 1 << 20
# The GGUF spec's bound on a key's length.
MAX_KEY_BYTES = (1 << 16) - 1
# Longer string values are skipped, never decoded nor kept (as arrays are): real ones are short
# (a chat template is kilobytes), and a lying length must not make the reader decode, cache and
# serve hundreds of megabytes (about 3x the string's size in memory, 5x if not ASCII).
MAX_STRING_BYTES = 1 << 20
# Integer arrays this short are read (per-layer counts: llama.cpp allows 512 layers).
MAX_LAYER_VALUES = 512

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_VT = gguf.GGUFValueType
_SCALARS: dict[int, struct.Struct] = {
    _VT.UINT8: struct.Struct("<B"),
    _VT.INT8: struct.Struct("<b"),
    _VT.UINT16: struct.Struct("<H"),
    _VT.INT16: struct.Struct("<h"),
    _VT.UINT32: struct.Struct("<I"),
    _VT.INT32: struct.Struct("<i"),
    _VT.FLOAT32: struct.Struct("<f"),
    _VT.BOOL: struct.Struct("<?"),
    _VT.UINT64: struct.Struct("<Q"),
    _VT.INT64: struct.Struct("<q"),
    _VT.FLOAT64: struct.Struct("<d"),
}
_SMALL_ARRAY_ITEMS = {
    _VT.UINT32: _SCALARS[_VT.UINT32],
    _VT.INT32: _SCALARS[_VT.INT32],
    _VT.BOOL: _SCALARS[_VT.BOOL],
}
_TENSOR_TYPES = {int(t): t for t in gguf.GGMLQuantizationType}
_FILE_TYPES = {int(t): t for t in gguf.LlamaFileType}

Scalar = str | int | float | bool


@dataclass(frozen=True, slots=True)
class _Tensor:
    name: str
    dims: tuple[int, ...]
    ggml_type: gguf.GGMLQuantizationType
    offset: int


class _Cursor:
    """Reads the file front to back into one growing buffer; every read is bounds-checked."""

    __slots__ = ("buf", "fh", "path", "pos", "size")

    def __init__(self, fh: BinaryIO, path: Path, size: int) -> None:
        self.fh = fh
        self.path = path
        self.size = size
        # bytes for the usual header that fits the first read; a bytearray once it must grow
        # (in place, where bytes would hold the old and the new copy at once).
        self.buf: bytes | bytearray = fh.read(min(size, FIRST_READ_BYTES))
        self.pos = 0

    def fail(self, what: str, offset: int | None = None) -> InvalidModelFile:
        where = "" if offset is None else f" at byte offset {offset}"
        return InvalidModelFile(f"{self.path}: invalid GGUF file: {what}{where}")

    def need(self, n: int, what: str) -> None:
        """Make sure n bytes from pos are buffered; a file too short for them is truncated."""
        end = self.pos + n
        if end <= len(self.buf):
            return
        if end > self.size:
            raise self.fail(f"truncated {what} (needs {n} bytes, file has {self.size})", self.pos)
        if end > MAX_HEADER_BYTES:
            raise self.fail(f"header larger than {MAX_HEADER_BYTES >> 20} MiB at {what}", self.pos)
        want = min(self.size, max(end, 2 * len(self.buf))) - len(self.buf)
        more = self.fh.read(want)
        if len(more) != want:
            raise self.fail(f"file shrank while reading {what}", self.pos)
        if isinstance(self.buf, bytes):
            self.buf = bytearray(self.buf)
        self.buf += more

    def unpack(self, fmt: struct.Struct, what: str) -> tuple[Any, ...]:
        self.need(fmt.size, what)
        value = fmt.unpack_from(self.buf, self.pos)
        self.pos += fmt.size
        return value

    def u32(self, what: str) -> int:
        return int(self.unpack(_U32, what)[0])

    def u64(self, what: str) -> int:
        return int(self.unpack(_U64, what)[0])

    def string_length(self, what: str) -> int:
        """A string's length prefix, checked against what is left of the file."""
        start = self.pos
        length = self.u64(f"{what} length")
        if length > self.size - self.pos:
            raise self.fail(f"{what} length {length} runs past the end of the file", start)
        return length

    def text(self, what: str, *, strict: bool, max_bytes: int) -> str | None:
        """A string decoded from UTF-8 (errors replaced unless strict), or None, skipped,
        when it is longer than max_bytes."""
        start = self.pos
        length = self.string_length(what)
        self.need(length, what)
        self.pos += length
        if length > max_bytes:
            return None
        # Decoded from a view of the buffer: no copy of the bytes first.
        with memoryview(self.buf) as view, view[self.pos - length : self.pos] as data:
            try:
                return str(data, "utf-8", "strict" if strict else "replace")
            except UnicodeDecodeError:
                raise self.fail(f"{what} is not valid UTF-8", start) from None

    def name(self, what: str) -> str:
        """A key or tensor name: valid UTF-8, and no longer than the spec allows a key."""
        start = self.pos
        name = self.text(what, strict=True, max_bytes=MAX_KEY_BYTES)
        if name is None:
            raise self.fail(f"{what} is longer than {MAX_KEY_BYTES} bytes", start)
        return name

    def skip_string_array(self, count: int, what: str) -> None:
        """Walk count length-prefixed strings without decoding or keeping any of them."""
        if count > (self.size - self.pos) // 8:
            raise self.fail(f"{what} has {count} strings, more than the file can hold", self.pos)
        unpack = _U64.unpack_from
        pos, start, i = self.pos, 0, 0
        while True:
            buf = self.buf
            try:
                for i in range(start, count):  # noqa: B007 (i is read when the buffer runs out)
                    pos += 8 + unpack(buf, pos)[0]
                break
            except (struct.error, OverflowError):
                # Ran off the buffer: grow it (or find the file truncated) and resume at item i.
                start, self.pos = i, pos
                self.need(8, f"{what} item {i}")
        if pos > self.size:
            raise self.fail(f"{what} runs past the end of the file", self.pos)
        self.pos = pos
        self.need(0, f"{what} last item")

    def skip(self, n: int, what: str) -> None:
        self.need(n, what)
        self.pos += n


def _read_value(cur: _Cursor, vtype: int, key: str) -> Scalar | None:
    """Read one non-array value; None for a string too long to keep (skipped)."""
    fmt = _SCALARS.get(vtype)
    if fmt is not None:
        value: Scalar = cur.unpack(fmt, f"value of {key!r}")[0]
        return value
    if vtype == _VT.STRING:
        return cur.text(f"value of {key!r}", strict=False, max_bytes=MAX_STRING_BYTES)
    raise cur.fail(f"key {key!r} has unknown value type {vtype}", cur.pos - 4)


def _skip_array(cur: _Cursor, key: str) -> int:
    """Skip an array value without materializing it; return its length."""
    start = cur.pos
    item_type = cur.u32(f"array type of {key!r}")
    count = cur.u64(f"array length of {key!r}")
    what = f"array {key!r}"
    if item_type == _VT.STRING:
        cur.skip_string_array(count, what)
    elif item_type == _VT.ARRAY:
        raise cur.fail(f"{what} nests arrays (only one level is supported)", start)
    elif item_type in _SCALARS:
        itemsize = _SCALARS[item_type].size
        if count > (cur.size - cur.pos) // itemsize:
            raise cur.fail(f"{what} length {count} runs past the end of the file", start)
        cur.skip(count * itemsize, what)
    else:
        raise cur.fail(f"{what} has unknown item type {item_type}", start)
    return count


def _read_kvs(
    cur: _Cursor, kv_count: int
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
        if vtype == _VT.ARRAY:
            values = _small_int_array(cur, key)
            if values is None:
                lengths[key] = _skip_array(cur, key)
            else:
                lengths[key], small[key] = len(values), values
        elif (value := _read_value(cur, vtype, key)) is not None:
            scalars[key] = value
    return scalars, lengths, small


def _small_int_array(cur: _Cursor, key: str) -> tuple[int, ...] | None:
    """An array of at most MAX_LAYER_VALUES (u)int32 or bool items, read; else None with the
    cursor left where it was."""
    start = cur.pos
    item_type = cur.u32(f"array type of {key!r}")
    count = cur.u64(f"array length of {key!r}")
    fmt = _SMALL_ARRAY_ITEMS.get(item_type)
    if fmt is None or count > MAX_LAYER_VALUES:
        cur.pos = start
        return None
    values = tuple(cur.unpack(fmt, f"array {key!r}")[0] for _ in range(count))
    return tuple(int(v) for v in values)


def _read_tensor(cur: _Cursor, index: int) -> _Tensor:
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


def _read_tensors(cur: _Cursor, tensor_count: int) -> list[_Tensor]:
    tensors = [_read_tensor(cur, i) for i in range(tensor_count)]
    if len({t.name for t in tensors}) != len(tensors):
        raise cur.fail("duplicate tensor names")
    return tensors


def _alignment(cur: _Cursor, scalars: dict[str, Scalar]) -> int:
    value = scalars.get(gguf.Keys.General.ALIGNMENT, DEFAULT_ALIGNMENT)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value & (value - 1):
        raise cur.fail(f"general.alignment {value!r} is not a positive power of two")
    return value


def _check_tensor_data(cur: _Cursor, tensors: list[_Tensor], alignment: int) -> None:
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


def _read_preamble(cur: _Cursor) -> tuple[int, int]:
    """Check magic and version; return (tensor_count, kv_count) after a plausibility check."""
    cur.need(4, "magic")
    magic = bytes(cur.buf[:4])
    if magic != GGUF_MAGIC:
        raise cur.fail(f"bad magic {magic!r} (expected {GGUF_MAGIC!r})", 0)
    cur.pos = 4
    version = cur.u32("header")
    if version not in SUPPORTED_VERSIONS:
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        hint = ", and big-endian files are not" if swapped in SUPPORTED_VERSIONS else ""
        raise cur.fail(f"unsupported version {version} (supported: 2, 3{hint})", 4)
    tensor_count, kv_count = cur.u64("header"), cur.u64("header")
    if tensor_count > MAX_TENSORS or kv_count > MAX_KVS:
        raise cur.fail(f"absurd counts: {tensor_count} tensors, {kv_count} KV pairs", 8)
    room = cur.size - HEADER_BYTES
    if tensor_count > room // MIN_TENSOR_INFO_BYTES:
        raise cur.fail(f"tensor count {tensor_count} cannot fit in a {cur.size}-byte file", 8)
    if kv_count > room // MIN_KV_BYTES:
        raise cur.fail(f"KV count {kv_count} cannot fit in a {cur.size}-byte file", 16)
    if tensor_count * MIN_TENSOR_INFO_BYTES + kv_count * MIN_KV_BYTES > room:
        raise cur.fail(f"{tensor_count} tensors and {kv_count} KV pairs cannot fit in the file")
    return tensor_count, kv_count


def _open_regular(path: Path) -> tuple[BinaryIO, int]:
    """Open path only if it is a non-empty regular file; return it and its size."""
    try:
        # O_NONBLOCK: opening a FIFO must not hang; regular files ignore the flag.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise InvalidModelFile(f"{path}: cannot open: {exc.strerror or exc}") from exc
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        os.close(fd)
        what = "the file is empty" if stat.S_ISREG(st.st_mode) else "not a regular file"
        raise InvalidModelFile(f"{path}: invalid GGUF file: {what}")
    return os.fdopen(fd, "rb"), st.st_size


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """A GGUF's tokenizer as llama.cpp will read it (core.metadata.vocab_check judges it)."""

    model: str  # tokenizer.ggml.model: "gpt2", "llama", "rwkv", ... ("" when absent)
    # Token texts as C strings (cut at the first NUL); an empty one is "[EMPTY_<id>]".
    tokens: tuple[bytes, ...]
    # tokenizer.ggml.precompiled_charsmap (SentencePiece's normalizer, for "t5"), when a byte array.
    charsmap: bytes = b""


def read_vocabulary(path: Path) -> Vocabulary:
    """The tokenizer model and token texts; the header is read again, other arrays skipped.
    A token list that is not of strings reads as empty (llama.cpp refuses it with an error)."""
    fh, size = _open_regular(path)
    model, charsmap = "", b""
    tokens: tuple[bytes, ...] = ()
    with fh:
        try:
            cur = _Cursor(fh, path, size)
            _, kv_count = _read_preamble(cur)
            for index in range(kv_count):
                key = cur.name(f"key of KV pair {index}")
                vtype = cur.u32(f"value type of {key!r}")
                if vtype != _VT.ARRAY:
                    value = _read_value(cur, vtype, key)
                    if key == gguf.Keys.Tokenizer.MODEL and isinstance(value, str):
                        model = value
                elif key == gguf.Keys.Tokenizer.PRECOMPILED_CHARSMAP:
                    charsmap = _byte_array(cur, key)
                elif key != gguf.Keys.Tokenizer.LIST:
                    _skip_array(cur, key)
                elif cur.u32(f"array type of {key!r}") == _VT.STRING:
                    tokens = _token_texts(cur, cur.u64(f"array length of {key!r}"), key)
                else:
                    cur.pos -= 4
                    _skip_array(cur, key)
        except OSError as exc:
            raise InvalidModelFile(f"{path}: read failed: {exc.strerror or exc}") from exc
        except MemoryError:
            raise InvalidModelFile(f"{path}: header too large to read") from None
    return Vocabulary(model, tokens, charsmap)


def _byte_array(cur: _Cursor, key: str) -> bytes:
    """An array of (u)int8 as bytes; any other array is skipped and reads as empty (llama.cpp
    refuses it with an error)."""
    start = cur.pos
    if cur.u32(f"array type of {key!r}") not in (_VT.UINT8, _VT.INT8):
        cur.pos = start
        _skip_array(cur, key)
        return b""
    count = cur.u64(f"array length of {key!r}")
    cur.need(count, f"array {key!r}")
    cur.pos += count
    return bytes(cur.buf[cur.pos - count : cur.pos])


def _token_texts(cur: _Cursor, count: int, key: str) -> tuple[bytes, ...]:
    if count > (cur.size - cur.pos) // 8:
        raise cur.fail(f"array {key!r} has {count} strings, more than the file can hold", cur.pos)
    texts = []
    for i in range(count):
        n = cur.u64(f"array {key!r} item {i}")
        cur.need(n, f"array {key!r} item {i}")
        texts.append(llama_token_text(bytes(cur.buf[cur.pos : cur.pos + n]), i))
        cur.pos += n
    return tuple(texts)


def llama_token_text(raw: bytes, token_id: int) -> bytes:
    """A token's text as llama.cpp reads it: a C string (to the first NUL); an empty one is
    "[EMPTY_<id>]"."""
    return raw.partition(b"\0")[0] or b"[EMPTY_%d]" % token_id


def read_gguf(path: Path) -> HeaderInfo:
    """Read a GGUF file's metadata from its header; raise InvalidModelFile on anything malformed."""
    fh, size = _open_regular(path)
    with fh:
        try:
            cur = _Cursor(fh, path, size)
            tensor_count, kv_count = _read_preamble(cur)
            scalars, lengths, small = _read_kvs(cur, kv_count)
            tensors = _read_tensors(cur, tensor_count)
            _check_tensor_data(cur, tensors, _alignment(cur, scalars))
        except OSError as exc:
            raise InvalidModelFile(f"{path}: read failed: {exc.strerror or exc}") from exc
        except MemoryError:
            raise InvalidModelFile(f"{path}: header too large to read") from None
    return _build(size, scalars, lengths, small, tensors)
