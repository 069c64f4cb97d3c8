"""Writes Hugging Face style checkpoints (config.json, tokenizer.json, SafeTensors weights) with
numpy alone: random Llama/Qwen2 models for the importer's tests and benchmark, and the files the
GGUF -> Hugging Face export writes."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.importer.vocab import bytes_to_unicode

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# A handful of merges so that "hello world" becomes two tokens.
TINY_MERGES = (
    ("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o"), ("Ġ", "w"), ("o", "r"),
    ("Ġw", "or"), ("l", "d"), ("Ġwor", "ld"),
)  # fmt: skip


def bf16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (round to nearest even), as uint16."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    return (rounded >> 16).astype(np.uint16)


def from_bf16_bits(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16}


def write_safetensors(path: Path, tensors: Mapping[str, tuple[str, np.ndarray]]) -> None:
    """Write `name -> (dtype, array)`; BF16 arrays are given as uint16 bit patterns."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, array) in tensors.items():
        nbytes = array.size * np.dtype(_DTYPES[dtype]).itemsize
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as out:
        out.write(struct.pack("<Q", len(raw)))
        out.write(raw)
        for dtype, array in tensors.values():
            np.ascontiguousarray(array, dtype=_DTYPES[dtype]).tofile(out)


def tokenizer_json(
    tokens: list[str], merges: list[str], specials: Mapping[str, int], pre: object
) -> dict[str, object]:
    vocab = {t: i for i, t in enumerate(tokens) if t not in specials}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": t, "normalized": False, "special": True}
            for t, i in specials.items()
        ],
        "normalizer": None,
        "pre_tokenizer": pre,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "byte_fallback": False,
            "vocab": vocab,
            "merges": [m.split(" ") for m in merges],
        },
    }


BYTE_LEVEL = {
    "type": "ByteLevel",
    "add_prefix_space": False,
    "trim_offsets": True,
    "use_regex": True,
}
SMOLLM_PRE = {
    "type": "Sequence",
    "pretokenizers": [{"type": "Digits", "individual_digits": True}, BYTE_LEVEL],
}


# A SentencePiece-style vocabulary (byte fallback, "▁" for spaces) spelling "hello world".
SPM_SPECIALS = ("<unk>", "<s>", "</s>")
SPM_MERGES = (
    ("l", "l"), ("▁", "h"), ("▁h", "e"), ("▁he", "ll"), ("▁hell", "o"), ("▁", "w"), ("o", "r"),
    ("▁w", "or"), ("l", "d"), ("▁wor", "ld"),
)  # fmt: skip
SPM_NORMALIZER = {
    "type": "Sequence",
    "normalizers": [
        {"type": "Prepend", "prepend": "▁"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
    ],
}


def spm_vocab() -> tuple[list[str], list[str]]:
    """Specials, the 256 byte tokens <0xNN>, a few characters, then one token per merge."""
    tokens = [*SPM_SPECIALS, *(f"<0x{b:02X}>" for b in range(256)), *"▁helowrd"]
    tokens += [a + b for a, b in SPM_MERGES]
    return tokens, [f"{a} {b}" for a, b in SPM_MERGES]


def tiny_vocab() -> tuple[list[str], list[str]]:
    """Specials, the 256 byte tokens, then one token per merge."""
    tokens = [*SPECIALS, *bytes_to_unicode().values()]
    tokens += [a + b for a, b in TINY_MERGES]
    return tokens, [f"{a} {b}" for a, b in TINY_MERGES]


@dataclass(frozen=True)
class Shape:
    """The dimensions of a Llama-family model."""

    vocab: int = 272
    hidden: int = 64
    intermediate: int = 128
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 16
    context: int = 512
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5


# SmolLM2-135M's dimensions.
SHAPE_135M = Shape(
    vocab=49152, hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3, head_dim=64,
    context=8192, rope_theta=100000.0,
)  # fmt: skip


def config_json(shape: Shape, architecture: str, *, tied: bool) -> dict[str, object]:
    model_type = {
        "LlamaForCausalLM": "llama",
        "MistralForCausalLM": "mistral",
        "Qwen2ForCausalLM": "qwen2",
    }.get(architecture, "x")
    return {
        "architectures": [architecture],
        "model_type": model_type,
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "head_dim": shape.head_dim,
        "vocab_size": shape.vocab,
        "max_position_embeddings": shape.context,
        "rope_theta": shape.rope_theta,
        "rms_norm_eps": shape.rms_eps,
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "bfloat16",
    }


def random_weights(
    shape: Shape, rng: np.random.Generator, *, tied: bool, qkv_bias: bool
) -> dict[str, np.ndarray]:
    """Float32 weights scaled so that attention is far from uniform (permutation bugs show)."""
    h, q, kv = shape.hidden, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim

    def mat(rows: int, cols: int) -> np.ndarray:
        return rng.standard_normal((rows, cols), dtype=np.float32) / np.sqrt(cols)

    def norm(n: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    w = {"model.embed_tokens.weight": rng.standard_normal((shape.vocab, h), dtype=np.float32)}
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm(h)
        w[p + "post_attention_layernorm.weight"] = norm(h)
        w[p + "self_attn.q_proj.weight"] = mat(q, h)
        w[p + "self_attn.k_proj.weight"] = mat(kv, h)
        w[p + "self_attn.v_proj.weight"] = mat(kv, h)
        w[p + "self_attn.o_proj.weight"] = mat(h, q)
        w[p + "mlp.gate_proj.weight"] = mat(shape.intermediate, h)
        w[p + "mlp.up_proj.weight"] = mat(shape.intermediate, h)
        w[p + "mlp.down_proj.weight"] = mat(h, shape.intermediate)
        if qkv_bias:
            for name, rows in (("q", q), ("k", kv), ("v", kv)):
                w[p + f"self_attn.{name}_proj.bias"] = (0.5 * rng.standard_normal(rows)).astype(
                    np.float32
                )
    w["model.norm.weight"] = norm(h)
    if not tied:
        w["lm_head.weight"] = mat(shape.vocab, h)
    return w


def write_checkpoint(
    directory: Path,
    config: dict[str, object],
    weights: Mapping[str, tuple[str, np.ndarray]],
    tokenizer: dict[str, object],
    tokenizer_config: dict[str, object],
    *,
    shards: int = 1,
) -> None:
    """config.json, tokenizer files and the weights (sharded through an index when shards > 1)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=1))
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False))
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=1))
    if shards == 1:
        write_safetensors(directory / "model.safetensors", weights)
        return
    names = list(weights)
    weight_map: dict[str, str] = {}
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = names[s::shards]
        write_safetensors(directory / file, {n: weights[n] for n in part})
        weight_map.update(dict.fromkeys(part, file))
    index = {"metadata": {}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))


def encode(weights: Mapping[str, np.ndarray], dtype: str) -> dict[str, tuple[str, np.ndarray]]:
    """Float32 weights in a SafeTensors dtype (BF16 as bit patterns)."""
    if dtype == "BF16":
        return {n: ("BF16", bf16_bits(w)) for n, w in weights.items()}
    return {n: (dtype, w.astype(_DTYPES[dtype])) for n, w in weights.items()}


def decoded(encoded: Mapping[str, tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """What the stored weights are, as float32 (the values a faithful import must reproduce)."""
    return {
        n: from_bf16_bits(a) if d == "BF16" else a.astype(np.float32)
        for n, (d, a) in encoded.items()
    }


def tiny_checkpoint(
    directory: Path,
    *,
    architecture: str = "LlamaForCausalLM",
    shape: Shape = Shape(),
    dtype: str = "BF16",
    tied: bool = False,
    seed: int = 0,
    shards: int = 1,
    pre: object = BYTE_LEVEL,
    sentencepiece: bool = False,
) -> dict[str, np.ndarray]:
    """A random model with a tiny BPE tokenizer (byte-level, or SentencePiece style with byte
    fallback); returns its stored weights as float32."""
    rng = np.random.default_rng(seed)
    qkv_bias = architecture == "Qwen2ForCausalLM"
    weights = encode(random_weights(shape, rng, tied=tied, qkv_bias=qkv_bias), dtype)
    if sentencepiece:
        tokens, merges = spm_vocab()
        tokenizer = tokenizer_json(tokens, merges, {t: i for i, t in enumerate(SPM_SPECIALS)}, None)
        model = tokenizer["model"]
        assert isinstance(model, dict)
        model |= {"byte_fallback": True, "unk_token": "<unk>", "fuse_unk": True}
        tokenizer |= {"normalizer": SPM_NORMALIZER, "decoder": None, "post_processor": None}
        tok_config = {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True}
    else:
        tokens, merges = tiny_vocab()
        specials = {t: i for i, t in enumerate(SPECIALS)}
        tokenizer = tokenizer_json(tokens, merges, specials, pre)
        tok_config = {
            "bos_token": "<|im_start|>",
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "add_bos_token": False,
        }
    write_checkpoint(
        directory,
        config_json(shape, architecture, tied=tied),
        weights,
        tokenizer,
        {**tok_config, "chat_template": CHATML},
        shards=shards,
    )
    return decoded(weights)
