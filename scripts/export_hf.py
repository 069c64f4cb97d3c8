"""Export a Llama-architecture GGUF to a Hugging Face checkpoint directory: dequantized weights
with llama.cpp's q/k permutation undone, config.json, tokenizer.json and tokenizer_config.json
rebuilt from the GGUF's keys. The inverse of Minerva's importer, used to prove it on a real model.

    python scripts/export_hf.py models/SmolLM2-135M-Instruct-Q4_1.gguf /tmp/smollm2-hf
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gguf
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.hf_checkpoint import (
    BYTE_LEVEL,
    SMOLLM_PRE,
    encode,
    tokenizer_json,
    write_checkpoint,
)

PRE_TOKENIZERS: dict[str, object] = {"gpt-2": BYTE_LEVEL, "smollm": SMOLLM_PRE}
_CONTROL, _USER_DEFINED = 3, 4


class ExportError(Exception):
    """The GGUF cannot be exported (architecture, tokenizer); the message is for the user."""


def unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order (adjacent pairs) back to Hugging Face's halves."""
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _hf_names(layers: int, tied: bool) -> dict[str, str]:
    """GGUF name -> Hugging Face name for every tensor of a Llama checkpoint."""
    mapping = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    hf = ["model.embed_tokens.weight", "model.norm.weight"] + ([] if tied else ["lm_head.weight"])
    for i in range(layers):
        p = f"model.layers.{i}."
        hf += [p + "input_layernorm.weight", p + "post_attention_layernorm.weight"]
        hf += [p + f"self_attn.{x}_proj.weight" for x in "qkvo"]
        hf += [p + f"mlp.{x}_proj.weight" for x in ("gate", "up", "down")]
    out = {}
    for name in hf:
        gguf_name = mapping.get_name(name, try_suffixes=(".weight",))
        if gguf_name is None:
            raise ExportError(f"no GGUF name for {name}")
        out[gguf_name] = name
    return out


def export(source: Path, dest: Path, dtype: str = "F16") -> None:
    reader = gguf.GGUFReader(source)

    def key(name: str, default: object = None) -> object:
        field = reader.fields.get(name)
        return field.contents() if field is not None else default

    if key("general.architecture") != "llama":
        raise ExportError(f"{source}: only llama GGUFs export, not {key('general.architecture')!r}")
    if key("tokenizer.ggml.model") != "gpt2":
        raise ExportError(f"{source}: only byte-level BPE (gpt2) vocabularies export")
    pre = str(key("tokenizer.ggml.pre"))
    if pre not in PRE_TOKENIZERS:
        raise ExportError(f"{source}: pre-tokenizer {pre!r} has no Hugging Face form here")
    heads, kv_heads = (
        int(key("llama.attention.head_count")),
        int(key("llama.attention.head_count_kv")),
    )  # type: ignore[arg-type]
    layers, hidden = int(key("llama.block_count")), int(key("llama.embedding_length"))  # type: ignore[arg-type]
    tensors = {t.name: t for t in reader.tensors}
    tied = "output.weight" not in tensors
    names = _hf_names(layers, tied)
    weights: dict[str, np.ndarray] = {}
    for gguf_name, hf_name in names.items():
        t = tensors[gguf_name]
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape(tuple(int(d) for d in reversed(t.shape)))
        if gguf_name.endswith("attn_q.weight"):
            w = unpermute(w, heads)
        elif gguf_name.endswith("attn_k.weight"):
            w = unpermute(w, kv_heads)
        weights[hf_name] = w
    tokens: list[str] = list(key("tokenizer.ggml.tokens"))  # type: ignore[arg-type]
    types: list[int] = list(key("tokenizer.ggml.token_type"))  # type: ignore[arg-type]
    merges: list[str] = list(key("tokenizer.ggml.merges"))  # type: ignore[arg-type]
    specials = {t: i for i, t in enumerate(tokens) if types[i] in (_CONTROL, _USER_DEFINED)}
    tokenizer = tokenizer_json(tokens, merges, specials, PRE_TOKENIZERS[pre])
    for entry in tokenizer["added_tokens"]:  # type: ignore[union-attr]
        entry["special"] = types[entry["id"]] == _CONTROL  # type: ignore[index]

    def token(name: str) -> str | None:
        token_id = key(f"tokenizer.ggml.{name}_token_id")
        return tokens[token_id] if isinstance(token_id, int) else None  # type: ignore[index]

    head_dim = int(key("llama.rope.dimension_count", hidden // heads))  # type: ignore[arg-type]
    bos, eos = key("tokenizer.ggml.bos_token_id"), key("tokenizer.ggml.eos_token_id")
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "_name_or_path": str(key("general.name", source.stem)),
        "hidden_size": hidden,
        "intermediate_size": int(key("llama.feed_forward_length")),  # type: ignore[arg-type]
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "vocab_size": len(tokens),
        "max_position_embeddings": int(key("llama.context_length")),  # type: ignore[arg-type]
        "rope_theta": float(key("llama.rope.freq_base", 10000.0)),  # type: ignore[arg-type]
        "rms_norm_eps": float(key("llama.attention.layer_norm_rms_epsilon")),  # type: ignore[arg-type]
        "tie_word_embeddings": tied,
        "hidden_act": "silu",
        "bos_token_id": bos,
        "eos_token_id": eos,
        "torch_dtype": "float16" if dtype == "F16" else "bfloat16",
    }
    tok_config: dict[str, object] = {
        "add_bos_token": bool(key("tokenizer.ggml.add_bos_token", False)),
        "bos_token": token("bos"),
        "eos_token": token("eos"),
        "pad_token": token("padding"),
        "unk_token": token("unknown"),
    }
    template = key("tokenizer.chat_template")
    if isinstance(template, str):
        tok_config["chat_template"] = template
    write_checkpoint(dest, config, encode(weights, dtype), tokenizer, tok_config)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("gguf", type=Path)
    p.add_argument("dest", type=Path)
    p.add_argument("--dtype", choices=["F16", "BF16", "F32"], default="F16")
    args = p.parse_args(argv)
    try:
        export(args.gguf, args.dest, args.dtype)
    except ExportError as exc:
        print(f"export_hf: {exc}", file=sys.stderr)
        return 1
    print(args.dest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
