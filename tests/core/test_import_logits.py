"""Imported checkpoints compute what their weights say: llama.cpp's logits on a converted tiny
random model against a numpy forward pass written from the Hugging Face modelling code.

A wrong q/k permutation, a swapped tensor name or a lost bias moves every logit after the first
position (RoPE is the identity at position 0), far beyond the f16 rounding the tolerance allows.
"""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from core.importer.cache import ImportCache
from core.importer.importer import Importer
from core.settings import ImportType
from scripts.hf_checkpoint import Shape, spm_vocab, tiny_checkpoint, tiny_vocab

SHAPE = Shape()
PROMPT = [5, 80, 120, 7, 3, 200, 150, 33, 90, 260]


def _rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def _rope(x: np.ndarray, theta: float) -> np.ndarray:
    """Hugging Face's rotate_half RoPE on (positions, heads, head_dim)."""
    half = x.shape[-1] // 2
    inv_freq = 1.0 / theta ** (np.arange(0, x.shape[-1], 2) / x.shape[-1])
    angles = np.arange(x.shape[0])[:, None] * inv_freq[None, :]
    cos = np.concatenate([np.cos(angles)] * 2, -1)[:, None, :]
    sin = np.concatenate([np.sin(angles)] * 2, -1)[:, None, :]
    rotated = np.concatenate([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


def reference_logits(w: dict[str, np.ndarray], shape: Shape, tokens: list[int]) -> np.ndarray:
    """LlamaForCausalLM / Qwen2ForCausalLM forward in float64: logits at every position."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    n, hd = len(tokens), shape.head_dim
    x = w["model.embed_tokens.weight"][tokens]
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        h = _rms_norm(x, w[p + "input_layernorm.weight"], shape.rms_eps)

        def proj(name: str, heads: int, h: np.ndarray = h, p: str = p) -> np.ndarray:
            y = h @ w[p + f"self_attn.{name}_proj.weight"].T
            y = y + w.get(p + f"self_attn.{name}_proj.bias", 0.0)
            return y.reshape(n, heads, hd)

        q = _rope(proj("q", shape.heads), shape.rope_theta)
        k = _rope(proj("k", shape.kv_heads), shape.rope_theta)
        v = proj("v", shape.kv_heads)
        group = shape.heads // shape.kv_heads
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd) + mask
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        attn = np.einsum("hqk,khd->qhd", scores, v).reshape(n, shape.heads * hd)
        x = x + attn @ w[p + "self_attn.o_proj.weight"].T
        h = _rms_norm(x, w[p + "post_attention_layernorm.weight"], shape.rms_eps)
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        up = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "mlp.down_proj.weight"].T
    x = _rms_norm(x, w["model.norm.weight"], shape.rms_eps)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return x @ head.T


def _f16(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What an f16 import stores: matrices rounded to f16, vectors kept exact."""
    return {
        k: v.astype(np.float16).astype(np.float32) if v.ndim > 1 else v for k, v in weights.items()
    }


def _import(source: Path, cache: Path, wanted: ImportType = ImportType.F16) -> Path:
    return Importer(ImportCache(cache)).ensure_gguf("tiny", source, wanted, lambda _f: None)


def _llama_logits(gguf_path: Path, tokens: list[int]) -> np.ndarray:
    llm = llama_cpp.Llama(
        model_path=str(gguf_path), n_ctx=64, logits_all=True, verbose=False, n_threads=2
    )
    try:
        llm.eval(tokens)
        return np.array(llm.scores[: len(tokens)], dtype=np.float64)
    finally:
        llm.close()


CASES = [
    pytest.param("LlamaForCausalLM", "BF16", False, 1, False, id="llama-bf16-gqa-untied"),
    pytest.param("LlamaForCausalLM", "F32", True, 3, False, id="llama-f32-tied-sharded"),
    pytest.param("Qwen2ForCausalLM", "F16", True, 1, False, id="qwen2-f16-biases-tied"),
    pytest.param("MistralForCausalLM", "BF16", False, 1, True, id="mistral-sentencepiece"),
]


@pytest.mark.parametrize(("architecture", "dtype", "tied", "shards", "sentencepiece"), CASES)
def test_imported_logits_match_the_reference_forward(
    tmp_path: Path, architecture: str, dtype: str, tied: bool, shards: int, sentencepiece: bool
) -> None:
    shape = Shape(vocab=280) if sentencepiece else SHAPE
    weights = tiny_checkpoint(
        tmp_path / "hf",
        architecture=architecture,
        dtype=dtype,
        tied=tied,
        shards=shards,
        shape=shape,
        sentencepiece=sentencepiece,
    )
    gguf_path = _import(tmp_path / "hf", tmp_path / "cache")
    got = _llama_logits(gguf_path, PROMPT)
    want = reference_logits(_f16(weights), shape, PROMPT)
    assert got.shape == (len(PROMPT), shape.vocab)
    scale = np.abs(want).max()
    assert scale > 1.0  # logits that carry signal, not a near-zero model
    err = np.abs(got - want).max(axis=1)
    # f16 activations and KV cache in llama.cpp: about 1e-3 relative; a mapping bug is ~1.
    assert err.max() < 0.02 * scale, f"per-position max error {err.round(4)} vs scale {scale:.2f}"
    assert (got.argmax(1) == want.argmax(1)).all()


def test_q8_0_import_stays_close(tmp_path: Path) -> None:
    weights = tiny_checkpoint(tmp_path / "hf", dtype="BF16")
    gguf_path = _import(tmp_path / "hf", tmp_path / "cache", ImportType.Q8_0)
    got = _llama_logits(gguf_path, PROMPT)
    want = reference_logits(weights, SHAPE, PROMPT)
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


def test_the_vocabulary_tokenizes_as_its_merges_say(tmp_path: Path) -> None:
    tiny_checkpoint(tmp_path / "hf")
    llm = llama_cpp.Llama(
        model_path=str(_import(tmp_path / "hf", tmp_path / "cache")), vocab_only=True, verbose=False
    )
    try:
        tokens, _ = tiny_vocab()
        ids = llm.tokenize(b"hello world", add_bos=False, special=False)
        assert [tokens[i] for i in ids] == ["hello", "Ġworld"]
        assert llm.tokenize(b"<|im_start|>hi", add_bos=False, special=True)[0] == 1
        assert llm.token_eos() == 2 and llm.token_bos() == 1
        assert llm.detokenize(ids) == b"hello world"
    finally:
        llm.close()


def test_a_sentencepiece_vocabulary_merges_by_rank_and_falls_back_to_bytes(
    tmp_path: Path,
) -> None:
    tiny_checkpoint(tmp_path / "hf", sentencepiece=True, shape=Shape(vocab=280))
    llm = llama_cpp.Llama(
        model_path=str(_import(tmp_path / "hf", tmp_path / "cache")), vocab_only=True, verbose=False
    )
    try:
        tokens, _ = spm_vocab()

        def pieces(text: bytes) -> list[str]:
            return [tokens[i] for i in llm.tokenize(text, add_bos=False)]

        assert pieces(b"hello world") == ["▁hello", "▁world"]
        # "é" is not in the vocabulary: its UTF-8 bytes, then merging goes on around them.
        assert pieces("hé ll".encode()) == ["▁h", "<0xC3>", "<0xA9>", "▁", "ll"]
        assert llm.tokenize(b"hello", add_bos=True)[0] == llm.token_bos() == 1
        assert llm.token_eos() == 2
        ids = llm.tokenize("hello wörld\n".encode(), add_bos=False)
        assert llm.detokenize(ids).decode().strip() == "hello wörld"
    finally:
        llm.close()
