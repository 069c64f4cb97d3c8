"""SafeTensors reader on hostile input: mutated headers, index files, config.json and templates.

Property: read_safetensors (and tensor_entries, which the importer uses) returns a header fit
to serve, or raises InvalidModelFile; never another exception, within a memory bound.
"""

from __future__ import annotations

import contextlib
import json
import struct
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from core.errors import InvalidModelFile
from core.metadata.safetensors_reader import (
    CONFIG_NAME,
    INDEX_NAME,
    TEMPLATE_FILE_NAME,
    TOKENIZER_CONFIG_NAME,
    read_safetensors,
    tensor_entries,
)
from tests.fuzz.bounded import read_bounded
from tests.fuzz.conftest import FUZZ
from tests.fuzz.hostile import EDGE_JSON, json_values, mutated_bytes, mutated_json

# Two tensors of a valid file: 2x3 F16 (12 bytes) then 4 F32 (16 bytes).
HEADER = {
    "__metadata__": {"format": "pt"},
    "a": {"dtype": "F16", "shape": [2, 3], "data_offsets": [0, 12]},
    "b": {"dtype": "F32", "shape": [4], "data_offsets": [12, 28]},
}
DATA_BYTES = 28
TENSOR_FIELDS = ("dtype", "shape", "data_offsets", "__metadata__", "a", "b")
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
INDEX = {"metadata": {"total_size": 2 * DATA_BYTES}, "weight_map": {"a": SHARDS[0], "b": SHARDS[1]}}
CONFIG = {
    "_name_or_path": "tiny/llama",
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "num_hidden_layers": 2,
    "hidden_size": 8,
    "vocab_size": 32,
    "max_position_embeddings": 512,
}
CONFIG_FIELDS = (*CONFIG, "text_config")
TOKENIZER_CONFIG = {"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}
# Shard names a hostile index may point at: escapes, odd bytes, directories, absent files.
SHARD_NAMES = (
    *SHARDS,
    "",
    ".",
    "..",
    "../outside.safetensors",
    "/etc/passwd",
    "a\x00b",
    "\ud800.safetensors",
    "\udcff.safetensors",
    "sub/",
    "x" * 300,
    "config.json",
)


def safetensors_bytes(header: Any, data_bytes: int = DATA_BYTES) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(data_bytes)


def check(path: Path) -> None:
    read_bounded(read_safetensors, path)
    with contextlib.suppress(InvalidModelFile):
        tensor_entries(path)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("safetensors")


def test_seeds_read_cleanly(scratch: Path) -> None:
    single = scratch / "seed.safetensors"
    single.write_bytes(safetensors_bytes(HEADER))
    info = read_bounded(read_safetensors, single)
    assert info is not None
    assert (info.metadata.tensor_count, info.metadata.parameter_count) == (2, 10)
    sharded = write_dir(scratch / "seed-dir", INDEX, CONFIG, TOKENIZER_CONFIG)
    info = read_bounded(read_safetensors, sharded)
    assert info is not None
    assert (info.metadata.architecture, info.metadata.layer_count) == ("llama", 2)
    assert info.chat_template == TOKENIZER_CONFIG["chat_template"]


def _tensor(**fields: Any) -> dict[str, Any]:
    return {**HEADER, "a": {**HEADER["a"], **fields}}


# Inputs that once escaped as another exception or failed later in GetModel, pinned.
@example(header=_tensor(shape=[10**400]), data_bytes=DATA_BYTES)  # OverflowError
@example(header={**HEADER, "__metadata__": {"format": "\ud800"}}, data_bytes=DATA_BYTES)
@FUZZ
@given(
    header=mutated_json(HEADER, names=TENSOR_FIELDS),
    data_bytes=st.sampled_from((DATA_BYTES, 0)) | st.integers(0, 64),
)
def test_mutated_headers(scratch: Path, header: Any, data_bytes: int) -> None:
    path = scratch / "fuzzed.safetensors"
    path.write_bytes(safetensors_bytes(header, data_bytes))
    check(path)


@FUZZ
@given(blob=mutated_bytes(safetensors_bytes(HEADER)))
def test_mutated_bytes(scratch: Path, blob: bytes) -> None:
    path = scratch / "fuzzed.safetensors"
    path.write_bytes(blob)
    check(path)


# --- sharded directories and their side files ------------------------------------------------


def write_dir(directory: Path, index: Any, config: Any, tokenizer_config: Any) -> Path:
    directory.mkdir()
    for name, header in (
        (SHARDS[0], {"a": HEADER["a"]}),
        (SHARDS[1], {"b": {**HEADER["b"], "data_offsets": [0, 16]}}),
    ):
        (directory / name).write_bytes(safetensors_bytes(header, 16 if name == SHARDS[1] else 12))
    (directory / INDEX_NAME).write_text(json.dumps(index))
    if config is not None:
        (directory / CONFIG_NAME).write_text(json.dumps(config))
    if tokenizer_config is not None:
        (directory / TOKENIZER_CONFIG_NAME).write_text(json.dumps(tokenizer_config))
    return directory


shard_maps = st.dictionaries(
    st.sampled_from(("a", "b", "c")) | st.text(max_size=6),
    st.sampled_from(SHARD_NAMES) | json_values,
    max_size=4,
)
indexes = mutated_json(INDEX, names=("weight_map", "metadata")) | shard_maps.map(
    lambda weight_map: {**INDEX, "weight_map": weight_map}
)
configs = st.none() | mutated_json(CONFIG, names=CONFIG_FIELDS) | st.sampled_from(EDGE_JSON)
tokenizer_configs = st.none() | mutated_json(TOKENIZER_CONFIG, names=("chat_template",))


def _index(shard: str) -> dict[str, Any]:
    return {**INDEX, "weight_map": {"a": shard, "b": SHARDS[1]}}


@example(index=_index("a\x00b"), config=None, tokenizer_config=None, template_file=None)
@example(index=_index("\ud800.st"), config=None, tokenizer_config=None, template_file=None)
@example(index=_index("\udcff.st"), config=None, tokenizer_config=None, template_file=None)
@example(
    index=INDEX, config={**CONFIG, "vocab_size": 2**40}, tokenizer_config=None, template_file=None
)
@example(index=INDEX, config=None, tokenizer_config={"chat_template": "\ud800"}, template_file=None)
@FUZZ
@given(
    index=indexes,
    config=configs,
    tokenizer_config=tokenizer_configs,
    template_file=st.none() | st.binary(max_size=64),
)
def test_mutated_directories(
    scratch: Path, index: Any, config: Any, tokenizer_config: Any, template_file: bytes | None
) -> None:
    with tempfile.TemporaryDirectory(dir=scratch) as parent:
        directory = write_dir(Path(parent) / "model", index, config, tokenizer_config)
        if template_file is not None:
            (directory / TEMPLATE_FILE_NAME).write_bytes(template_file)
        check(directory)
