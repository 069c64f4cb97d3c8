"""GGUF header reader on hostile files: mutated real headers and generated ones with lying fields.

Property: read_gguf returns a header fit to serve, or raises InvalidModelFile; never another
exception, and within a memory bound whatever its length and count fields claim.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import gguf
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from core.errors import InvalidModelFile
from core.metadata.gguf_reader import read_gguf
from core.metadata.header_values import header_values
from tests.conftest import DEFAULT_MODEL_PATH
from tests.fuzz.bounded import read_bounded
from tests.fuzz.conftest import FUZZ
from tests.fuzz.hostile import mutated_bytes, u32s, u64s
from tests.unit.conftest import write_tiny_gguf

VT = gguf.GGUFValueType
QT = gguf.GGMLQuantizationType
_SCALAR_SIZES = {
    VT.UINT8: 1,
    VT.INT8: 1,
    VT.BOOL: 1,
    VT.UINT16: 2,
    VT.INT16: 2,
    VT.UINT32: 4,
    VT.INT32: 4,
    VT.FLOAT32: 4,
    VT.UINT64: 8,
    VT.INT64: 8,
    VT.FLOAT64: 8,
}
# The keys whose values end up in the metadata, and a few the reader treats specially.
KEYS = (
    "general.architecture",
    "general.name",
    "general.alignment",
    "general.file_type",
    "llama.block_count",
    "llama.context_length",
    "llama.embedding_length",
    "llama.vocab_size",
    "tokenizer.chat_template",
    "tokenizer.ggml.tokens",
)


@dataclass(frozen=True)
class Seed:
    """A valid GGUF file as its header bytes (mutated) and its data section's length (kept,
    written as a sparse hole so the real model's 98 MB cost no disk)."""

    name: str
    head: bytes
    tail: int


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[Seed]:
    tiny = write_tiny_gguf(tmp_path_factory.mktemp("seed") / "tiny.gguf").read_bytes()
    found = [Seed("tiny", tiny, 0)]
    if DEFAULT_MODEL_PATH.is_file():
        start = gguf.GGUFReader(DEFAULT_MODEL_PATH, "r").data_offset
        with DEFAULT_MODEL_PATH.open("rb") as fh:
            head = fh.read(start)
        found.append(Seed("smollm2", head, DEFAULT_MODEL_PATH.stat().st_size - start))
    return found


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gguf") / "fuzzed.gguf"


def write(path: Path, head: bytes, tail: int = 0) -> Path:
    with path.open("wb") as fh:
        fh.write(head)
        os.ftruncate(fh.fileno(), len(head) + tail)
    return path


def check(path: Path) -> None:
    """The property, plus GetModel's with_header_arrays path on whatever reads cleanly."""
    info = read_bounded(read_gguf, path)
    if info is None or path.stat().st_size > 1 << 20:
        return
    try:
        values = header_values(path, info, with_arrays=True)
    except InvalidModelFile:
        return
    json.dumps(values, ensure_ascii=False, default=str).encode("utf-8")


def test_seeds_read_cleanly(seeds: list[Seed], scratch: Path) -> None:
    """The mutations start from files the reader accepts, so they probe past the first check."""
    for seed in seeds:
        info = read_bounded(read_gguf, write(scratch, seed.head, seed.tail))
        assert info is not None, seed.name
        assert info.metadata.architecture == "llama"
        assert info.metadata.tensor_count > 0


@FUZZ
@given(data=st.data())
def test_mutated_headers(seeds: list[Seed], scratch: Path, data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from(seeds), label="seed")
    head = data.draw(mutated_bytes(seed.head), label="head")
    check(write(scratch, head, seed.tail))


# --- generated files, every field free to lie ------------------------------------------------

names = st.text(max_size=10).map(str.encode) | st.binary(max_size=10)


def string(raw: bytes) -> bytes:
    return struct.pack("<Q", len(raw)) + raw


@st.composite
def lying_string(draw: st.DrawFn) -> bytes:
    """A length-prefixed string, or a length with fewer (or more) bytes behind it."""
    raw = draw(names | st.sampled_from((b"llama", *(k.encode() for k in KEYS))))
    if draw(st.booleans()):
        return string(raw)
    return struct.pack("<Q", draw(u64s)) + raw


@st.composite
def scalar(draw: st.DrawFn, vtype: int) -> bytes:
    size = _SCALAR_SIZES[vtype]
    edge = st.sampled_from((0, 1, 2 ** (8 * size) - 1, 2 ** (8 * size - 1))).map(
        lambda v: v.to_bytes(size, "little")
    )
    return draw(edge | st.binary(min_size=size, max_size=size))


@st.composite
def array(draw: st.DrawFn) -> bytes:
    """Item type, count (true or not) and items; nested and unknown item types included."""
    item_type = draw(st.sampled_from(list(VT)) | u32s)
    if item_type in _SCALAR_SIZES:
        items = draw(st.lists(scalar(item_type), max_size=8))
    elif item_type == VT.STRING:
        items = draw(st.lists(lying_string(), max_size=8))
    else:
        items = [draw(st.binary(max_size=16))]
    count = draw(st.just(len(items)) | u64s)
    return struct.pack("<IQ", item_type, count) + b"".join(items)


@st.composite
def value(draw: st.DrawFn, vtype: int) -> bytes:
    if vtype in _SCALAR_SIZES:
        return draw(scalar(vtype))
    if vtype == VT.STRING:
        return draw(lying_string())
    if vtype == VT.ARRAY:
        return draw(array())
    return draw(st.binary(max_size=8))


@st.composite
def kv_pair(draw: st.DrawFn) -> bytes:
    key = draw(st.sampled_from(KEYS).map(str.encode) | names)
    vtype = draw(st.sampled_from(list(VT)) | u32s)
    return string(key) + struct.pack("<I", vtype) + draw(value(vtype))


@st.composite
def tensor_info(draw: st.DrawFn, index: int) -> bytes:
    name = draw(st.just(f"t{index}".encode()) | names)
    n_dims = draw(st.integers(1, 4) | u32s)
    dims = draw(st.lists(st.integers(0, 64) | u64s, min_size=min(n_dims, 5), max_size=5))
    tensor_type = draw(st.sampled_from(list(QT)) | u32s)
    offset = draw(st.integers(0, 8).map(lambda k: 32 * k) | u64s)
    packed = struct.pack(f"<I{min(n_dims, 5)}Q", n_dims, *dims[: min(n_dims, 5)])
    return string(name) + packed + struct.pack("<IQ", tensor_type, offset)


# Keys like llama.block_count only count under this architecture.
ARCHITECTURE_KV = string(b"general.architecture") + struct.pack("<I", VT.STRING) + string(b"llama")


@st.composite
def gguf_files(draw: st.DrawFn) -> bytes:
    kvs = [ARCHITECTURE_KV] if draw(st.booleans()) else []
    kvs += draw(st.lists(kv_pair(), max_size=6))
    tensors = [draw(tensor_info(i)) for i in range(draw(st.integers(0, 4)))]
    magic = draw(st.just(b"GGUF") | st.binary(min_size=4, max_size=4))
    version = draw(st.sampled_from((2, 3)) | u32s)
    tensor_count = draw(st.just(len(tensors)) | u64s)
    kv_count = draw(st.just(len(kvs)) | u64s)
    head = magic + struct.pack("<IQQ", version, tensor_count, kv_count)
    body = head + b"".join(kvs) + b"".join(tensors)
    body += bytes(-len(body) % 32)
    return body + bytes(draw(st.integers(0, 4096)))


def _padded(body: bytes) -> bytes:
    return body + bytes(-len(body) % 32)


# Headers that once passed the reader and then failed GetModel/ListModels, pinned.
LAYERS_PAST_UINT32 = _padded(
    b"GGUF"
    + struct.pack("<IQQ", 3, 0, 2)
    + ARCHITECTURE_KV
    + string(b"llama.block_count")
    + struct.pack("<IQ", VT.UINT64, 2**40)
)


@example(blob=LAYERS_PAST_UINT32)
@FUZZ
@given(blob=gguf_files())
def test_generated_headers(scratch: Path, blob: bytes) -> None:
    check(write(scratch, blob))
