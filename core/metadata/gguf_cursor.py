"""Bounds-checked reading of a GGUF header, front to back: the byte cursor, one value, one array,
the preamble. The header reader (gguf_reader) and the vocabulary reader (gguf_vocab) build on it."""

from __future__ import annotations

import contextlib
import os
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import gguf

from core.errors import InvalidModelFile

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
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

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
VT = gguf.GGUFValueType
SCALARS: dict[int, struct.Struct] = {
    VT.UINT8: struct.Struct("<B"),
    VT.INT8: struct.Struct("<b"),
    VT.UINT16: struct.Struct("<H"),
    VT.INT16: struct.Struct("<h"),
    VT.UINT32: struct.Struct("<I"),
    VT.INT32: struct.Struct("<i"),
    VT.FLOAT32: struct.Struct("<f"),
    VT.BOOL: struct.Struct("<?"),
    VT.UINT64: struct.Struct("<Q"),
    VT.INT64: struct.Struct("<q"),
    VT.FLOAT64: struct.Struct("<d"),
}

Scalar = str | int | float | bool


@contextlib.contextmanager
def open_header(path: Path) -> Iterator[Cursor]:
    """A cursor at the start of a regular, non-empty file; read and memory failures become
    InvalidModelFile naming the file."""
    fh, size = open_regular(path)
    with fh:
        try:
            yield Cursor(fh, path, size)
        except OSError as exc:
            raise InvalidModelFile(f"{path}: read failed: {exc.strerror or exc}") from exc
        except MemoryError:
            raise InvalidModelFile(f"{path}: header too large to read") from None


class Cursor:
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


def read_value(cur: Cursor, vtype: int, key: str) -> Scalar | None:
    """Read one non-array value; None for a string too long to keep (skipped)."""
    fmt = SCALARS.get(vtype)
    if fmt is not None:
        value: Scalar = cur.unpack(fmt, f"value of {key!r}")[0]
        return value
    if vtype == VT.STRING:
        return cur.text(f"value of {key!r}", strict=False, max_bytes=MAX_STRING_BYTES)
    raise cur.fail(f"key {key!r} has unknown value type {vtype}", cur.pos - 4)


def skip_array(cur: Cursor, key: str) -> int:
    """Skip an array value without materializing it; return its length."""
    start = cur.pos
    item_type = cur.u32(f"array type of {key!r}")
    count = cur.u64(f"array length of {key!r}")
    what = f"array {key!r}"
    if item_type == VT.STRING:
        cur.skip_string_array(count, what)
    elif item_type == VT.ARRAY:
        raise cur.fail(f"{what} nests arrays (only one level is supported)", start)
    elif item_type in SCALARS:
        itemsize = SCALARS[item_type].size
        if count > (cur.size - cur.pos) // itemsize:
            raise cur.fail(f"{what} length {count} runs past the end of the file", start)
        cur.skip(count * itemsize, what)
    else:
        raise cur.fail(f"{what} has unknown item type {item_type}", start)
    return count


def read_preamble(cur: Cursor) -> tuple[int, int]:
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


def open_regular(path: Path) -> tuple[BinaryIO, int]:
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
