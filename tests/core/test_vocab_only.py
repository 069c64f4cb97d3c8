"""Vocabularies read without weights: what llama.cpp would die of, caught where it arises."""

from __future__ import annotations

from pathlib import Path

import gguf
import llama_cpp
import pytest

from core.engine.vocab import Vocab
from core.errors import InvalidModelFile, InvalidRequest
from core.metadata.vocab_check import check_vocabulary


def write_vocab_only(path: Path, model: str, tokens: list[str]) -> Path:
    """A GGUF with a tokenizer and the hyperparameters a vocabulary-only load reads."""
    writer = gguf.GGUFWriter(path, "llama")
    for key, value in [
        ("llama.block_count", 1),
        ("llama.context_length", 256),
        ("llama.embedding_length", 64),
        ("llama.feed_forward_length", 128),
        ("llama.attention.head_count", 4),
    ]:
        writer.add_uint32(key, value)
    writer.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_tokenizer_model(model)
    writer.add_token_list(tokens)
    writer.add_token_scores([float(-i) for i in range(len(tokens))])
    writer.add_token_types([1] * len(tokens))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_text_a_vocabulary_cannot_encode_is_refused_not_fatal(tmp_path: Path) -> None:
    # RWKV has no unknown token: "c" (which no token starts with) tokenizes to -1, and asking
    # llama.cpp for that id's piece would terminate the process.
    path = write_vocab_only(tmp_path / "rwkv.gguf", "rwkv", ["a", "b", "ab", "\\n"])
    check_vocabulary(path)  # no dead end: loadable
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    assert model
    try:
        vocab = Vocab(model)
        assert vocab.tokenize("ab", add_special=False, parse_special=False) == [2]
        with pytest.raises(InvalidRequest, match="cannot encode part of the text"):
            vocab.tokenize("abc", add_special=False, parse_special=False)
    finally:
        llama_cpp.llama_model_free(model)


def test_a_model_without_a_tokenizer_is_refused(tmp_path: Path) -> None:
    for name in ("none", "no_vocab"):
        path = write_vocab_only(tmp_path / f"{name}.gguf", name, ["a", "b"])
        with pytest.raises(InvalidModelFile, match="it has no tokenizer"):
            check_vocabulary(path)
