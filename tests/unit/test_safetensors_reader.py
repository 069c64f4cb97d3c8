"""SafeTensors reader: single files, sharded directories, config files, and malformed input."""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from core.errors import InvalidModelFile
from core.metadata.safetensors_reader import read_safetensors
from core.metadata.types import ModelFormat, ModelMetadata

CONFIG = {
    "_name_or_path": "tiny/llama",
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "num_hidden_layers": 2,
    "hidden_size": 8,
    "vocab_size": 32,
    "max_position_embeddings": 512,
}
TEMPLATE = "{% for m in messages %}{{ m.content }}{% endfor %}"


def tiny_tensors() -> dict[str, np.ndarray]:
    """256 + 8 + 2 * 64 elements; F16 holds 768 bytes, F32 32 bytes."""
    tensors: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": np.ones((32, 8), dtype=np.float16),
        "model.norm.weight": np.ones(8, dtype=np.float32),
    }
    for layer in range(2):
        tensors[f"model.layers.{layer}.mlp.up_proj.weight"] = np.ones((8, 8), dtype=np.float16)
    return tensors


def write_json(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def write_model_dir(directory: Path) -> Path:
    directory.mkdir(exist_ok=True)
    save_file(tiny_tensors(), str(directory / "model.safetensors"), metadata={"format": "pt"})
    write_json(directory / "config.json", CONFIG)
    write_json(directory / "tokenizer_config.json", {"chat_template": TEMPLATE})
    return directory


def write_sharded_dir(directory: Path) -> Path:
    """Two shards of tiny_tensors(), the index, and config.json."""
    directory.mkdir(exist_ok=True)
    tensors = tiny_tensors()
    names = sorted(tensors)
    shards = {
        "model-00001-of-00002.safetensors": names[:2],
        "model-00002-of-00002.safetensors": names[2:],
    }
    for shard, members in shards.items():
        save_file({n: tensors[n] for n in members}, str(directory / shard))
    weight_map = {n: shard for shard, members in shards.items() for n in members}
    write_json(
        directory / "model.safetensors.index.json",
        {"metadata": {"total_size": 800}, "weight_map": weight_map},
    )
    write_json(directory / "config.json", CONFIG)
    return directory


def write_raw(path: Path, header: object, data: bytes = b"", *, raw: bytes | None = None) -> Path:
    """A SafeTensors file from a header object (or raw header bytes) and a data section."""
    blob = json.dumps(header).encode() if raw is None else raw
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


EXPECTED = ModelMetadata(
    format=ModelFormat.SAFETENSORS,
    architecture="llama",
    quantization="F16+F32",
    file_size_bytes=0,  # replaced per test
    tensor_count=4,
    layer_count=2,
    embedding_length=8,
    vocab_size=32,
    context_length=512,
    parameter_count=256 + 8 + 128,
    has_chat_template=True,
    name="tiny/llama",
)


def test_single_file_with_config(tmp_path: Path) -> None:
    weights = write_model_dir(tmp_path / "m") / "model.safetensors"
    info = read_safetensors(weights)
    assert info.metadata == replace(EXPECTED, file_size_bytes=weights.stat().st_size)
    assert info.chat_template == TEMPLATE
    assert info.scalars == {"format": "pt", "config.architectures": "LlamaForCausalLM"}


def test_directory_with_single_file_reads_the_same(tmp_path: Path) -> None:
    directory = write_model_dir(tmp_path / "m")
    assert read_safetensors(directory) == read_safetensors(directory / "model.safetensors")


def test_bare_file_without_side_files(tmp_path: Path) -> None:
    path = tmp_path / "bare.safetensors"
    save_file({"w": np.zeros((3, 5), dtype=np.float32)}, str(path))
    info = read_safetensors(path)
    assert info.metadata == ModelMetadata(
        format=ModelFormat.SAFETENSORS,
        quantization="F32",
        file_size_bytes=path.stat().st_size,
        tensor_count=1,
        parameter_count=15,
    )
    assert (info.chat_template, info.scalars) == (None, {})


def test_sharded_directory_sums_shards(tmp_path: Path) -> None:
    directory = write_sharded_dir(tmp_path / "sharded")
    info = read_safetensors(directory)
    shard_bytes = sum(p.stat().st_size for p in directory.glob("*.safetensors"))
    assert info.metadata == replace(EXPECTED, file_size_bytes=shard_bytes, has_chat_template=False)
    assert info.scalars == {"total_size": 800, "config.architectures": "LlamaForCausalLM"}


def test_bf16_and_sub_byte_dtypes(tmp_path: Path) -> None:
    header = {
        "a": {"dtype": "BF16", "shape": [4, 4], "data_offsets": [0, 32]},
        "b": {"dtype": "F4", "shape": [8], "data_offsets": [32, 36]},
        "c": {"dtype": "U8", "shape": [8], "data_offsets": [36, 44]},
    }
    meta = read_safetensors(write_raw(tmp_path / "x.safetensors", header, bytes(44))).metadata
    assert (meta.quantization, meta.parameter_count, meta.tensor_count) == ("BF16+U8+F4", 32, 3)


@pytest.mark.parametrize(
    ("tokenizer_config", "expected"),
    [
        ({"chat_template": TEMPLATE}, TEMPLATE),
        (
            {
                "chat_template": [
                    {"name": "tool_use", "template": "T"},
                    {"name": "default", "template": "D"},
                ]
            },
            "D",
        ),
        ({"chat_template": [{"name": "tool_use", "template": "T"}]}, None),
        ({"chat_template": ""}, None),
        ({"chat_template": 7}, None),
        ({"bos_token": "<s>"}, None),
    ],
)
def test_chat_template_from_tokenizer_config(
    tmp_path: Path, tokenizer_config: dict[str, object], expected: str | None
) -> None:
    directory = write_model_dir(tmp_path / "m")
    write_json(directory / "tokenizer_config.json", tokenizer_config)
    info = read_safetensors(directory)
    assert info.chat_template == expected
    assert info.metadata.has_chat_template is (expected is not None)


def test_chat_template_jinja_file(tmp_path: Path) -> None:
    directory = write_model_dir(tmp_path / "m")
    (directory / "tokenizer_config.json").unlink()
    (directory / "chat_template.jinja").write_text("J {{ messages }}", encoding="utf-8")
    assert read_safetensors(directory).chat_template == "J {{ messages }}"


@pytest.mark.parametrize(
    ("config", "architecture", "layers"),
    [
        (
            {"architectures": ["MistralForCausalLM"], "num_hidden_layers": 4},
            "MistralForCausalLM",
            4,
        ),
        ({"model_type": "gemma3", "text_config": {"num_hidden_layers": 6}}, "gemma3", 6),
        ({"model_type": "llama", "num_hidden_layers": "2"}, "llama", 0),
        ({"model_type": "llama", "num_hidden_layers": True}, "llama", 0),
        # Sizes travel as uint32: larger is not believed.
        ({"model_type": "llama", "num_hidden_layers": 2**32}, "llama", 0),
        ({}, "", 0),
    ],
)
def test_config_fields(
    tmp_path: Path, config: dict[str, object], architecture: str, layers: int
) -> None:
    directory = write_model_dir(tmp_path / "m")
    write_json(directory / "config.json", config)
    meta = read_safetensors(directory).metadata
    assert (meta.architecture, meta.layer_count) == (architecture, layers)


# ---- malformed single files --------------------------------------------------------------------

GOOD_ENTRY = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}


def entry(**changes: object) -> dict[str, object]:
    return {"w": {**GOOD_ENTRY, **changes}}


FILE_CASES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("empty", lambda p: _touch(p), r"truncated: 0 bytes, no 8-byte header length"),
    ("short-prefix", lambda p: _bytes(p, b"\x05\0\0"), r"truncated: 3 bytes"),
    (
        "header-beyond-file",
        lambda p: _bytes(p, struct.pack("<Q", 1000) + b"{}"),
        r"header length 1000 runs past the end of the file",
    ),
    (
        "header-too-large",
        lambda p: _bytes(p, struct.pack("<Q", 2**40) + b"{}"),
        r"header length 1099511627776 exceeds 104857600 bytes",
    ),
    ("bad-json", lambda p: write_raw(p, None, raw=b"{not json"), r"header is not valid JSON"),
    ("not-utf8", lambda p: write_raw(p, None, raw=b'{"\xff": 1}'), r"header is not valid JSON"),
    (
        "deep-nesting",
        lambda p: write_raw(p, None, raw=b"[" * 100_000 + b"]" * 100_000),
        r"header is not valid JSON",
    ),
    (
        "huge-int",
        lambda p: write_raw(p, None, raw=b'{"w": ' + b"9" * 5000 + b"}"),
        r"header is not valid JSON",
    ),
    ("header-not-object", lambda p: write_raw(p, [1, 2]), r"header is not a JSON object"),
    ("entry-not-object", lambda p: write_raw(p, {"w": 5}), r"tensor 'w' entry is not an object"),
    (
        "unknown-dtype",
        lambda p: write_raw(p, entry(dtype="F128"), bytes(16)),
        r"tensor 'w' has unknown dtype 'F128'",
    ),
    ("dtype-not-string", lambda p: write_raw(p, entry(dtype=4), bytes(16)), r"unknown dtype 4"),
    (
        "missing-dtype",
        lambda p: write_raw(p, {"w": {"shape": [1], "data_offsets": [0, 4]}}, bytes(4)),
        r"unknown dtype None",
    ),
    (
        "shape-not-list",
        lambda p: write_raw(p, entry(shape=4), bytes(16)),
        r"shape 4 is not a list of non-negative ints",
    ),
    (
        "shape-negative",
        lambda p: write_raw(p, entry(shape=[-2, -2]), bytes(16)),
        r"shape \[-2, -2\] is not a list",
    ),
    (
        "shape-float",
        lambda p: write_raw(p, entry(shape=[2.0, 2]), bytes(16)),
        r"shape \[2.0, 2\] is not a list",
    ),
    (
        "shape-bool",
        lambda p: write_raw(p, entry(shape=[True, 4]), bytes(16)),
        r"shape \[True, 4\] is not a list",
    ),
    (
        "shape-past-64-bits",
        lambda p: write_raw(p, entry(shape=[10**400, 0]), bytes(16)),
        r"has more than 2\*\*64 elements",
    ),
    (
        "offsets-one-value",
        lambda p: write_raw(p, entry(data_offsets=[16]), bytes(16)),
        r"data_offsets \[16\] is not \[begin, end\]",
    ),
    (
        "offsets-negative",
        lambda p: write_raw(p, entry(data_offsets=[-16, 0]), bytes(16)),
        r"is not \[begin, end\]",
    ),
    (
        "offsets-reversed",
        lambda p: write_raw(p, entry(data_offsets=[16, 0]), bytes(16)),
        r"data_offsets \[16, 0\] lie outside the 16-byte data section",
    ),
    (
        "offsets-beyond-eof",
        lambda p: write_raw(p, entry(data_offsets=[0, 16]), bytes(8)),
        r"data_offsets \[0, 16\] lie outside the 8-byte data section",
    ),
    (
        "size-mismatch",
        lambda p: write_raw(p, entry(shape=[2, 3]), bytes(16)),
        r"tensor 'w' spans 16 bytes, but F32 \[2, 3\] needs 24",
    ),
    (
        "sub-byte-not-whole",
        lambda p: write_raw(p, entry(dtype="F4", shape=[3], data_offsets=[0, 2]), bytes(2)),
        r"spans 2 bytes, but F4 \[3\] needs 1.5",
    ),
    (
        "lone-surrogate",
        lambda p: write_raw(p, None, raw=b'{"__metadata__": {"a": "\\ud800"}}'),
        r"header holds a lone UTF-16 surrogate",
    ),
    (
        "metadata-not-object",
        lambda p: write_raw(p, {"__metadata__": "x"}),
        r"__metadata__ is not an object",
    ),
    (
        "directory-empty",
        lambda p: _mkdir(p),
        r"directory holds neither model.safetensors.index.json nor",
    ),
    ("missing", lambda p: p, r"cannot open: No such file or directory"),
    ("fifo", lambda p: _fifo(p), r"not a regular file"),
]


def _touch(path: Path) -> Path:
    path.touch()
    return path


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(("build", "pattern"), [pytest.param(b, p, id=i) for i, b, p in FILE_CASES])
def test_malformed_file_is_rejected(
    tmp_path: Path, build: Callable[[Path], Path], pattern: str
) -> None:
    path = build(tmp_path / "bad.safetensors")
    with pytest.raises(InvalidModelFile) as caught:
        read_safetensors(path)
    assert re.search(pattern, caught.value.message), caught.value.message
    assert str(path) in caught.value.message


# ---- malformed sharded directories and side files -------------------------------------------

INDEX = "model.safetensors.index.json"
SHARD_1 = "model-00001-of-00002.safetensors"


def _edit_index(directory: Path, edit: Callable[[dict[str, Any]], object]) -> None:
    doc = json.loads((directory / INDEX).read_text())
    write_json(directory / INDEX, edit(doc))


def _map_tensor(directory: Path, tensor: str | None, shard: object) -> None:
    """Point one weight_map entry (the first, when tensor is None) at shard."""

    def edit(doc: dict[str, Any]) -> dict[str, Any]:
        weight_map = doc["weight_map"]
        weight_map[tensor or sorted(weight_map)[0]] = shard
        return doc

    _edit_index(directory, edit)


def _symlink_outside(directory: Path) -> None:
    outside = directory.parent / "outside.safetensors"
    (directory / SHARD_1).rename(outside)
    (directory / SHARD_1).symlink_to(outside)


def _duplicate_tensor(directory: Path) -> None:
    tensors = tiny_tensors()
    first = sorted(tensors)[0]
    extra = {first: tensors[first], "extra.weight": np.ones(2, dtype=np.float32)}
    save_file(extra, str(directory / "extra.safetensors"))
    _map_tensor(directory, "extra.weight", "extra.safetensors")


DIR_CASES: list[tuple[str, Callable[[Path], object], str, str]] = [
    ("index-bad-json", lambda d: (d / INDEX).write_text("{"), INDEX, r"file is not valid JSON"),
    ("index-not-object", lambda d: write_json(d / INDEX, []), INDEX, r"no weight_map object"),
    (
        "index-no-weight-map",
        lambda d: _edit_index(d, lambda doc: {"metadata": {}}),
        INDEX,
        r"no weight_map object",
    ),
    (
        "index-empty-weight-map",
        lambda d: _edit_index(d, lambda doc: {"weight_map": {}}),
        INDEX,
        r"no weight_map",
    ),
    (
        "shard-absolute",
        lambda d: _map_tensor(d, None, "/etc/passwd"),
        INDEX,
        r"shard '/etc/passwd' points outside the model directory",
    ),
    (
        "shard-dotdot",
        lambda d: _map_tensor(d, None, "../x.safetensors"),
        INDEX,
        r"shard '../x.safetensors' points outside the model directory",
    ),
    (
        "shard-not-string",
        lambda d: _map_tensor(d, None, 5),
        INDEX,
        r"shard name 5 is not a file name",
    ),
    (
        "shard-nul",
        lambda d: _map_tensor(d, None, "a\x00b"),
        INDEX,
        r"shard name 'a\\x00b' is not a file name",
    ),
    (
        "shard-symlink-outside",
        _symlink_outside,
        INDEX,
        rf"shard '{SHARD_1}' resolves outside the model directory",
    ),
    (
        "shard-missing",
        lambda d: (d / SHARD_1).unlink(),
        SHARD_1,
        r"cannot open: No such file or directory",
    ),
    (
        "tensor-not-in-shard",
        lambda d: _map_tensor(d, "ghost.weight", SHARD_1),
        INDEX,
        rf"tensor 'ghost.weight' is not in shard '{SHARD_1}'",
    ),
    ("tensor-in-two-shards", _duplicate_tensor, INDEX, r"appears in more than one shard"),
    (
        "config-bad-json",
        lambda d: (d / "config.json").write_text("{'a': 1}"),
        "config.json",
        r"file is not valid JSON",
    ),
    (
        "config-not-object",
        lambda d: write_json(d / "config.json", "llama"),
        "config.json",
        r"is not a JSON object",
    ),
    (
        "config-lone-surrogate",
        lambda d: (d / "config.json").write_text('{"model_type": "\\udcff"}'),
        "config.json",
        r"file holds a lone UTF-16 surrogate",
    ),
    (
        "tokenizer-config-bad-json",
        lambda d: (d / "tokenizer_config.json").write_bytes(b"\xff"),
        "tokenizer_config.json",
        r"file is not valid JSON",
    ),
]


@pytest.mark.parametrize(
    ("damage", "culprit", "pattern"), [pytest.param(a, c, p, id=i) for i, a, c, p in DIR_CASES]
)
def test_malformed_directory_is_rejected(
    tmp_path: Path, damage: Callable[[Path], object], culprit: str, pattern: str
) -> None:
    directory = write_sharded_dir(tmp_path / "sharded")
    write_json(directory / "tokenizer_config.json", {"chat_template": TEMPLATE})
    read_safetensors(directory)  # valid before the damage
    damage(directory)
    with pytest.raises(InvalidModelFile) as caught:
        read_safetensors(directory)
    assert re.search(pattern, caught.value.message), caught.value.message
    assert caught.value.message.startswith(f"{directory / culprit}: invalid SafeTensors model: ")
