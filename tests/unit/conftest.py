"""Fixtures for the unit tests: small, real-looking GGUF files written with gguf.GGUFWriter."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

TINY_TOKENS = ["<unk>", "<s>", "</s>", "a", "b", "c", "ab", "bc", "abc", " hello"]
TINY_TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
# Element counts of the tensors below: 16*8 + 8 + 2 * (64*4) + 2 * 8.
TINY_PARAMETERS = 128 + 8 + 512 + 16


def write_tiny_gguf(
    path: Path,
    *,
    file_type: int | None = gguf.LlamaFileType.MOSTLY_Q8_0,
    chat_template: str | None = TINY_TEMPLATE,
    vocab_size: int | None = None,
    tokens: list[str] = TINY_TOKENS,
) -> Path:
    """A 2-layer "llama" with a tokenizer, a chat template and F32/Q8_0 tensors."""
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("Tiny Llama")
    writer.add_block_count(2)
    writer.add_context_length(256)
    writer.add_embedding_length(8)
    writer.add_head_count(2)
    writer.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    if file_type is not None:
        writer.add_file_type(file_type)
    if vocab_size is not None:
        writer.add_vocab_size(vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_scores([float(i) for i in range(len(tokens))])
    writer.add_token_types([1] * len(tokens))
    writer.add_token_merges(["a b", "b c", "ab c"])
    writer.add_bool("tokenizer.ggml.add_bos_token", True)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    writer.add_tensor("token_embd.weight", np.ones((16, 8), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    for layer in range(2):
        # Q8_0: 32-element blocks of 34 bytes; 4 rows of 64 elements = 4 x 68 bytes.
        q8 = np.zeros((4, 68), dtype=np.uint8)
        writer.add_tensor(
            f"blk.{layer}.ffn_up.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0
        )
        writer.add_tensor(f"blk.{layer}.attn_norm.weight", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "tiny.gguf")


@pytest.fixture
def make_tiny_gguf(tmp_path: Path) -> Callable[..., Path]:
    """Factory: make_tiny_gguf(name, **options) writes a variant into tmp_path."""

    def make(name: str = "variant.gguf", **options: object) -> Path:
        return write_tiny_gguf(tmp_path / name, **options)  # type: ignore[arg-type]

    return make
