"""GGUF header reader: fields of real and generated files, and rejection of malformed ones."""

from __future__ import annotations

import os
import random
import re
import struct
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

from core.errors import InvalidModelFile
from core.metadata.gguf_cursor import MAX_STRING_BYTES
from core.metadata.gguf_reader import read_gguf
from core.metadata.gguf_vocab import read_vocabulary
from core.metadata.types import HeaderInfo, ModelFormat, ModelMetadata
from core.metadata.vocab_check import repeated_token
from tests.unit.conftest import TINY_PARAMETERS, TINY_TEMPLATE, TINY_TOKENS, write_tiny_gguf

VT = gguf.GGUFValueType
QT = gguf.GGMLQuantizationType


def test_tiny_file_fields(tiny_gguf: Path) -> None:
    info = read_gguf(tiny_gguf)
    assert info.metadata == ModelMetadata(
        format=ModelFormat.GGUF,
        architecture="llama",
        quantization="Q8_0",
        file_size_bytes=tiny_gguf.stat().st_size,
        tensor_count=6,
        layer_count=2,
        embedding_length=8,
        vocab_size=len(TINY_TOKENS),
        context_length=256,
        parameter_count=TINY_PARAMETERS,
        has_chat_template=True,
        name="Tiny Llama",
    )
    assert info.chat_template == TINY_TEMPLATE


def test_scalars_hold_every_non_array_value(tiny_gguf: Path) -> None:
    scalars = read_gguf(tiny_gguf).scalars
    assert scalars["general.architecture"] == "llama"
    assert scalars["llama.block_count"] == 2
    assert scalars["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert scalars["tokenizer.ggml.add_bos_token"] is True
    assert scalars["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0
    assert scalars["tokenizer.chat_template"] == TINY_TEMPLATE
    arrays = {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.merges"}
    assert arrays.isdisjoint(scalars)
    assert len(scalars) == 11


def test_vocab_size_key_wins_over_token_count(make_tiny_gguf: Callable[..., Path]) -> None:
    assert read_gguf(make_tiny_gguf(vocab_size=32)).metadata.vocab_size == 32


def test_sizes_past_uint32_are_unknown(tmp_path: Path) -> None:
    """Layer, context and vocabulary sizes travel as protobuf uint32: a header claiming more is
    not believed (0, unknown), so describing the model cannot fail later."""
    path = tmp_path / "big.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_uint64("llama.block_count", 2**32)
    writer.add_uint64("llama.context_length", 2**40)
    writer.add_uint64("llama.vocab_size", 2**63)
    writer.add_uint32("llama.embedding_length", 2**32 - 1)
    writer.add_tensor("w", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    info = read_gguf(path)
    meta = info.metadata
    assert (meta.layer_count, meta.context_length, meta.vocab_size) == (0, 0, 0)
    assert meta.embedding_length == 2**32 - 1
    assert info.scalars["llama.block_count"] == 2**32


def test_without_chat_template(make_tiny_gguf: Callable[..., Path]) -> None:
    info = read_gguf(make_tiny_gguf(chat_template=None))
    assert info.metadata.has_chat_template is False
    assert info.chat_template is None
    assert "tokenizer.chat_template" not in info.scalars


@pytest.mark.parametrize(
    ("file_type", "expected"),
    [
        (gguf.LlamaFileType.ALL_F32, "F32"),
        (gguf.LlamaFileType.MOSTLY_F16, "F16"),
        (gguf.LlamaFileType.MOSTLY_Q4_1, "Q4_1"),
        (gguf.LlamaFileType.MOSTLY_Q4_K_M, "Q4_K_M"),
        (gguf.LlamaFileType.MOSTLY_BF16, "BF16"),
        # Not a file type llama.cpp knows: fall back to the matrices' most common type.
        (999, "Q8_0"),
        (None, "Q8_0"),
    ],
)
def test_quantization_name(
    make_tiny_gguf: Callable[..., Path], file_type: int | None, expected: str
) -> None:
    assert read_gguf(make_tiny_gguf(file_type=file_type)).metadata.quantization == expected


def test_version_2_is_accepted(tiny_gguf: Path) -> None:
    data = bytearray(tiny_gguf.read_bytes())
    data[4:8] = struct.pack("<I", 2)
    tiny_gguf.write_bytes(bytes(data))
    assert read_gguf(tiny_gguf).metadata.tensor_count == 6


def test_default_model(default_model_path: Path) -> None:
    info = read_gguf(default_model_path)
    meta = info.metadata
    assert (meta.format, meta.architecture, meta.quantization) == (
        ModelFormat.GGUF,
        "llama",
        "Q4_1",
    )
    assert meta.tensor_count == 272
    assert meta.layer_count == 30
    assert meta.vocab_size == 49152
    assert meta.context_length == 8192
    assert meta.embedding_length == 576
    assert meta.has_chat_template is True
    assert info.chat_template is not None and "<|im_start|>" in info.chat_template
    assert meta.parameter_count > 100_000_000
    assert meta.file_size_bytes == default_model_path.stat().st_size


def test_extra_model(extra_model_path: Path) -> None:
    meta = read_gguf(extra_model_path).metadata
    assert (meta.architecture, meta.quantization, meta.name) == ("gemma3", "Q4_K_M", "Gemma 3 270m")
    assert (meta.tensor_count, meta.layer_count, meta.embedding_length) == (236, 18, 640)
    assert (meta.vocab_size, meta.context_length) == (262144, 32768)
    assert meta.parameter_count > 250_000_000


# ---- hand-packed files, one malformation each -------------------------------------------------


def u32(value: int) -> bytes:
    return struct.pack("<I", value)


def u64(value: int) -> bytes:
    return struct.pack("<Q", value)


def gstr(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return u64(len(data)) + data


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + u32(vtype) + payload


def kv_strings(key: str, items: list[str]) -> bytes:
    return kv(key, VT.ARRAY, u32(VT.STRING) + u64(len(items)) + b"".join(map(gstr, items)))


def tensor(name: str, dims: list[int], ttype: int = QT.F32, offset: int = 0) -> bytes:
    return gstr(name) + u32(len(dims)) + b"".join(map(u64, dims)) + u32(ttype) + u64(offset)


BASE_KVS = [
    kv("general.architecture", VT.STRING, gstr("llama")),
    kv("llama.block_count", VT.UINT32, u32(1)),
]
# A third KV pair, so that truncating inside it leaves room for the counts in the header.
PADDED_KVS = [*BASE_KVS, kv("general.description", VT.STRING, gstr("a tiny test model"))]
BASE_TENSORS = [tensor("w", [4, 2])]


def pack(
    kvs: list[bytes] | None = None,
    tensors: list[bytes] | None = None,
    *,
    magic: bytes = b"GGUF",
    version: int = 3,
    n_tensors: int | None = None,
    n_kv: int | None = None,
    data: bytes = bytes(32),
) -> bytes:
    kvs = BASE_KVS if kvs is None else kvs
    tensors = BASE_TENSORS if tensors is None else tensors
    head = magic + u32(version) + u64(len(tensors) if n_tensors is None else n_tensors)
    head += u64(len(kvs) if n_kv is None else n_kv) + b"".join(kvs) + b"".join(tensors)
    return head + bytes(-len(head) % 32) + data


def test_hand_packed_base_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "base.gguf"
    path.write_bytes(pack())
    meta = read_gguf(path).metadata
    assert (meta.architecture, meta.layer_count, meta.tensor_count) == ("llama", 1, 1)
    assert (meta.parameter_count, meta.quantization) == (8, "F32")


def test_long_string_values_are_skipped_not_kept(tmp_path: Path) -> None:
    """A string value past MAX_STRING_BYTES is skipped like an array: the rest still reads."""
    huge = kv("general.name", VT.STRING, gstr("n" * (MAX_STRING_BYTES + 1)))
    path = tmp_path / "long.gguf"
    path.write_bytes(pack([*BASE_KVS, huge, kv("general.description", VT.STRING, gstr("d"))]))
    info = read_gguf(path)
    assert info.metadata.name == ""
    assert "general.name" not in info.scalars
    assert info.scalars["general.description"] == "d"
    assert info.metadata.layer_count == 1


KVS_END = 24 + len(b"".join(BASE_KVS))
TOKENS_KV = kv_strings("tokenizer.ggml.tokens", ["token"] * 20)
LONG_VALUE_KV = kv("general.description", VT.STRING, gstr("x" * 200))

MALFORMED: list[tuple[str, Callable[[], bytes], str]] = [
    (
        "key-too-long",
        lambda: pack([kv("k" * 65536, VT.UINT8, b"\x01")]),
        r"key of KV pair 0 is longer than 65535 bytes at byte offset 24",
    ),
    (
        "bad-magic",
        lambda: pack(magic=b"GGUX"),
        r"bad magic b'GGUX' \(expected b'GGUF'\) at byte offset 0",
    ),
    ("version-1", lambda: pack(version=1), r"unsupported version 1 \(supported: 2, 3\)"),
    (
        "version-big-endian",
        lambda: pack(version=3 << 24),
        r"unsupported version 50331648 \(supported: 2, 3, and big-endian files are not\)",
    ),
    ("truncated-magic", lambda: b"GG", r"truncated magic"),
    ("truncated-header", lambda: pack()[:20], r"truncated header"),
    (
        "truncated-kv-key-length",
        lambda: pack(PADDED_KVS, [])[: KVS_END + 4],
        rf"truncated key of KV pair 2 length \(needs 8 bytes, file has {KVS_END + 4}\)"
        rf" at byte offset {KVS_END}",
    ),
    (
        "truncated-kv-key",
        lambda: pack(PADDED_KVS, [])[: KVS_END + 8 + 3],
        rf"key of KV pair 2 length 19 runs past the end of the file at byte offset {KVS_END}",
    ),
    (
        "truncated-kv-value",
        lambda: pack([LONG_VALUE_KV], [])[: 24 + 60],
        r"general\.description' length 200 runs past",
    ),
    (
        "truncated-scalar",
        lambda: pack(PADDED_KVS, [])[: KVS_END - 2],
        r"truncated value of 'llama.block_count'",
    ),
    (
        "truncated-string-array",
        lambda: pack([TOKENS_KV], [])[: 24 + 100],
        r"array 'tokenizer\.ggml\.tokens'",
    ),
    (
        "truncated-tensor-info",
        lambda: pack()[: KVS_END + 20],
        r"truncated dimensions of tensor 'w'",
    ),
    ("tensor-count-cannot-fit", lambda: pack(n_tensors=1000), r"tensor count 1000 cannot fit"),
    ("kv-count-cannot-fit", lambda: pack(n_kv=1000), r"KV count 1000 cannot fit"),
    (
        "absurd-tensor-count",
        lambda: pack(n_tensors=2**63),
        r"absurd counts: 9223372036854775808 tensors",
    ),
    ("absurd-kv-count", lambda: pack(n_kv=2**64 - 1), r"absurd counts: .* 18446744073709551615 KV"),
    (
        "key-length-beyond-file",
        lambda: pack([u64(2**62) + b"key"], []),
        r"key of KV pair 0 length 4611686018427387904 runs past",
    ),
    (
        "array-length-beyond-file",
        lambda: pack([kv("a", VT.ARRAY, u32(VT.UINT32) + u64(2**40))], []),
        r"array 'a' length 1099511627776 runs past the end",
    ),
    (
        "string-array-count-beyond-file",
        lambda: pack([kv("a", VT.ARRAY, u32(VT.STRING) + u64(2**40))], []),
        r"array 'a' has 1099511627776 strings, more than the file can hold",
    ),
    (
        "string-in-array-beyond-file",
        lambda: pack([kv("a", VT.ARRAY, u32(VT.STRING) + u64(1) + u64(2**63))], []),
        r"array 'a' runs past the end of the file",
    ),
    (
        "unknown-value-type",
        lambda: pack([kv("odd", 99, u32(0))], []),
        r"key 'odd' has unknown value type 99",
    ),
    (
        "unknown-array-item-type",
        lambda: pack([kv("odd", VT.ARRAY, u32(77) + u64(1))], []),
        r"array 'odd' has unknown item type 77",
    ),
    (
        "nested-array",
        lambda: pack(
            [kv("n", VT.ARRAY, u32(VT.ARRAY) + u64(1) + u32(VT.UINT8) + u64(1) + b"\0")], []
        ),
        r"array 'n' nests arrays",
    ),
    (
        "key-not-utf8",
        lambda: pack([kv(b"\xff\xfekey", VT.UINT8, b"\0")], []),
        r"key of KV pair 0 is not valid UTF-8",
    ),
    (
        "duplicate-key",
        lambda: pack(BASE_KVS + BASE_KVS[:1]),
        r"duplicate key 'general.architecture'",
    ),
    (
        "tensor-5-dims",
        lambda: pack(tensors=[tensor("w", [1, 1, 1, 1, 1])]),
        r"tensor 'w' has 5 dimensions",
    ),
    ("tensor-0-dims", lambda: pack(tensors=[tensor("w", [])]), r"tensor 'w' has 0 dimensions"),
    (
        "tensor-unknown-type",
        lambda: pack(tensors=[tensor("w", [4, 2], ttype=999)]),
        r"tensor 'w' has unknown type 999",
    ),
    (
        "tensor-name-not-utf8",
        lambda: pack(tensors=[gstr(b"\xc3(") + u32(1) + u64(1) + u32(0) + u64(0)]),
        r"name of tensor 0 is not valid UTF-8",
    ),
    (
        "duplicate-tensor",
        lambda: pack(tensors=[tensor("w", [4]), tensor("w", [4], offset=32)], data=bytes(64)),
        r"duplicate tensor names",
    ),
    (
        "tensor-data-beyond-eof",
        lambda: pack(tensors=[tensor("w", [4, 2], offset=32)]),
        r"tensor 'w' data \(32 bytes at data offset 32\) runs past the end of the file",
    ),
    (
        "tensor-larger-than-file",
        lambda: pack(tensors=[tensor("w", [2**32, 2**32])]),
        r"tensor 'w' data .* runs past the end",
    ),
    (
        "tensor-offset-unaligned",
        lambda: pack(tensors=[tensor("w", [2], offset=4)]),
        r"data offset 4 is not 32-aligned",
    ),
    (
        "tensor-row-not-whole-blocks",
        lambda: pack(tensors=[tensor("w", [16, 1], ttype=QT.Q8_0)]),
        r"row of 16 is not a multiple of the Q8_0 block size 32",
    ),
    (
        "alignment-not-power-of-two",
        lambda: pack([*BASE_KVS, kv("general.alignment", VT.UINT32, u32(24))]),
        r"general\.alignment 24 is not a positive power of two",
    ),
    (
        "alignment-zero",
        lambda: pack([*BASE_KVS, kv("general.alignment", VT.UINT32, u32(0))]),
        r"general\.alignment 0 is not a positive power of two",
    ),
]


@pytest.mark.parametrize(("build", "pattern"), [pytest.param(b, p, id=i) for i, b, p in MALFORMED])
def test_malformed_file_is_rejected(
    tmp_path: Path, build: Callable[[], bytes], pattern: str
) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(build())
    with pytest.raises(InvalidModelFile) as caught:
        read_gguf(path)
    assert re.search(pattern, caught.value.message), caught.value.message
    assert caught.value.message.startswith(f"{path}: ")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.touch()
    with pytest.raises(InvalidModelFile, match="the file is empty"):
        read_gguf(path)


def test_directory_is_not_a_regular_file(tmp_path: Path) -> None:
    path = tmp_path / "dir.gguf"
    path.mkdir()
    with pytest.raises(InvalidModelFile, match="not a regular file"):
        read_gguf(path)


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "pipe.gguf"
    os.mkfifo(path)
    with pytest.raises(InvalidModelFile, match="not a regular file"):
        read_gguf(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelFile, match="cannot open: No such file or directory"):
        read_gguf(tmp_path / "nope.gguf")


# ---- fuzz-ish: every truncation and random corruption --------------------------------------


def test_every_truncation_is_rejected(tmp_path: Path) -> None:
    data = write_tiny_gguf(tmp_path / "whole.gguf").read_bytes()
    path = tmp_path / "cut.gguf"
    # Padding after the last tensor is at most 31 bytes: shorter cuts always lose needed bytes.
    for length in range(len(data) - 31):
        path.write_bytes(data[:length])
        with pytest.raises(InvalidModelFile):
            read_gguf(path)


def test_random_corruption_yields_header_or_invalid_model_file(tmp_path: Path) -> None:
    whole = write_tiny_gguf(tmp_path / "whole.gguf")
    data = whole.read_bytes()
    # Only the header matters: corrupting weights changes nothing the reader looks at.
    header_end = gguf.GGUFReader(whole).data_offset
    rng = random.Random(20240601)
    path = tmp_path / "corrupt.gguf"
    outcomes = {"ok": 0, "invalid": 0}
    for _ in range(600):
        corrupt = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            corrupt[rng.randrange(header_end)] = rng.randrange(256)
        path.write_bytes(bytes(corrupt))
        try:
            assert isinstance(read_gguf(path), HeaderInfo)
            outcomes["ok"] += 1
        except InvalidModelFile:
            outcomes["invalid"] += 1
    # Both outcomes occur: corrupting string bytes is harmless, lengths and types are not.
    assert outcomes["ok"] > 0 and outcomes["invalid"] > 0, outcomes


def test_repeated_token_finds_the_first_text_listed_twice(
    tiny_gguf: Path, make_tiny_gguf: Callable[..., Path]
) -> None:
    """llama.cpp aborts the process on a vocabulary with a repeated token: found beforehand."""

    def repeat(path: Path) -> tuple[int, int, bytes] | None:
        return repeated_token(read_vocabulary(path))

    assert repeat(tiny_gguf) is None
    tokens = [*TINY_TOKENS, "bc", "b"]
    assert repeat(make_tiny_gguf("dup.gguf", tokens=tokens)) == (7, 10, b"bc")
    # Compared as llama.cpp reads them: C strings, an empty one named by its id.
    empty = [*TINY_TOKENS, "", ""]
    assert repeat(make_tiny_gguf("empty.gguf", tokens=empty)) is None
    nul = [*TINY_TOKENS, "q\0x", "q\0y"]
    assert repeat(make_tiny_gguf("nul.gguf", tokens=nul)) == (10, 11, b"q")
    named = [*TINY_TOKENS, "", "[EMPTY_10]"]
    assert repeat(make_tiny_gguf("named.gguf", tokens=named)) == (10, 11, b"[EMPTY_10]")


def test_the_vocabulary_reads_the_tokenizer_model_and_texts(tiny_gguf: Path) -> None:
    vocab = read_vocabulary(tiny_gguf)
    assert vocab.model == "gpt2"
    assert vocab.tokens == tuple(t.encode() for t in TINY_TOKENS)


def test_a_truncated_token_list_is_invalid(tiny_gguf: Path, tmp_path: Path) -> None:
    data = tiny_gguf.read_bytes()
    cut = data.index(b" hello")  # the last token's text
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[:cut])
    with pytest.raises(InvalidModelFile):
        read_vocabulary(path)


def test_short_integer_arrays_are_kept_with_their_values(tmp_path: Path) -> None:
    writer = gguf.GGUFWriter(tmp_path / "layers.gguf", "llama")
    writer.add_block_count(3)
    writer.add_array("llama.expert_used_count", [2, 2, 4])
    writer.add_array("llama.swa_layers", [True, False, True])
    writer.add_array("llama.long", list(range(513)))
    writer.add_token_list(["a", "b"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    header = read_gguf(tmp_path / "layers.gguf")
    assert header.small_arrays == {
        "llama.expert_used_count": (2, 2, 4),
        "llama.swa_layers": (1, 0, 1),
    }
    assert header.array_lengths["llama.long"] == 513
    assert header.array_lengths["tokenizer.ggml.tokens"] == 2
