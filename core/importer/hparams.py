"""A Hugging Face `config.json` -> the hyperparameters a GGUF needs, for an allow-list of families."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from pathlib import Path

import gguf

from core.errors import InvalidModelFile, UnsupportedModel

# Real checkpoints have up to ~130; a config claiming more is refused before any work.
MAX_LAYERS = 1024
# YaRN settings llama.cpp's import takes as given; other values are refused, not ignored.
_YARN_DEFAULTS = {"beta_fast": 32.0, "beta_slow": 1.0, "attention_factor": None}


@dataclass(frozen=True, slots=True)
class Family:
    """How one architecture's tensors become llama.cpp's."""

    arch: gguf.MODEL_ARCH
    # Llama checkpoints rotate q/k in halves (rotate_half); llama.cpp rotates adjacent pairs.
    permute_qk: bool
    # q/k/v projections always carry biases (Qwen2).
    qkv_bias: bool


_LLAMA = Family(gguf.MODEL_ARCH.LLAMA, permute_qk=True, qkv_bias=False)
FAMILIES: dict[str, Family] = {
    "LlamaForCausalLM": _LLAMA,
    "MistralForCausalLM": _LLAMA,
    "Qwen2ForCausalLM": Family(gguf.MODEL_ARCH.QWEN2, permute_qk=False, qkv_bias=True),
}


class RopeKind(enum.Enum):
    NONE = "none"
    LINEAR = "linear"
    YARN = "yarn"
    LLAMA3 = "llama3"


@dataclass(frozen=True, slots=True)
class RopeScaling:
    kind: RopeKind = RopeKind.NONE
    factor: float = 1.0
    original_context: int = 0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0


@dataclass(frozen=True, slots=True)
class HParams:
    architecture: str  # the Hugging Face class, e.g. "LlamaForCausalLM"
    family: Family
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    context_length: int
    rope_theta: float
    rms_eps: float
    tied_embeddings: bool
    attention_bias: bool  # q/k/v (and o, for Llama) biases present
    rope: RopeScaling
    name: str = ""


def supported_list() -> str:
    return ", ".join(sorted(FAMILIES))


def _fail(path: Path, what: str) -> InvalidModelFile:
    return InvalidModelFile(f"{path}: invalid config.json: {what}")


def _int(config: dict[str, object], path: Path, key: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if value is None:
        raise _fail(path, f"`{key}` is missing")
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise _fail(path, f"`{key}` must be a positive integer, got {value!r}")
    return value


def _float(config: dict[str, object], path: Path, key: str, default: float) -> float:
    value = config.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise _fail(path, f"`{key}` must be a number, got {value!r}")
    if value <= 0:
        raise _fail(path, f"`{key}` must be positive, got {value!r}")
    return float(value)


def _bool(config: dict[str, object], path: Path, key: str, default: bool) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise _fail(path, f"`{key}` must be true or false, got {value!r}")
    return value


def architecture_of(config: dict[str, object], path: Path) -> tuple[str, Family]:
    """The checkpoint's class and its family; UnsupportedModel names both it and the allow-list."""
    architectures = config.get("architectures")
    if not isinstance(architectures, list) or not architectures:
        raise _fail(path, '`architectures` is missing (e.g. ["LlamaForCausalLM"])')
    name = architectures[0]
    family = FAMILIES.get(name) if isinstance(name, str) else None
    if family is None or len(architectures) != 1:
        raise UnsupportedModel(
            f"{path}: architecture {architectures!r} cannot be imported; "
            f"supported: {supported_list()}"
        )
    return name, family


def _rope_scaling(config: dict[str, object], path: Path) -> RopeScaling:
    raw = config.get("rope_scaling")
    if raw is None:
        return RopeScaling()
    if not isinstance(raw, dict):
        raise _fail(path, f"`rope_scaling` must be an object, got {raw!r}")
    kind = raw.get("rope_type", raw.get("type"))
    if kind == "default":
        return RopeScaling()
    if kind not in ("linear", "yarn", "llama3"):
        raise UnsupportedModel(
            f"{path}: rope_scaling type {kind!r} cannot be imported; supported: linear, yarn, llama3"
        )
    factor = _float(raw, path, "factor", 1.0)
    if kind == "linear":
        return RopeScaling(RopeKind.LINEAR, factor)
    original = _int(raw, path, "original_max_position_embeddings")
    if kind == "yarn":
        for key, default in _YARN_DEFAULTS.items():
            if raw.get(key, default) != default:
                raise UnsupportedModel(
                    f"{path}: rope_scaling {key}={raw[key]!r} cannot be imported (only {default})"
                )
        return RopeScaling(RopeKind.YARN, factor, original)
    low = _float(raw, path, "low_freq_factor", 1.0)
    high = _float(raw, path, "high_freq_factor", 4.0)
    if high <= low:
        raise _fail(path, "rope_scaling high_freq_factor must exceed low_freq_factor")
    return RopeScaling(RopeKind.LLAMA3, factor, original, low, high)


def read_hparams(config: dict[str, object], path: Path) -> HParams:
    """Validate config.json for an allow-listed family; InvalidModelFile names the bad key."""
    architecture, family = architecture_of(config, path)
    hidden = _int(config, path, "hidden_size")
    heads = _int(config, path, "num_attention_heads")
    kv_heads = _int(config, path, "num_key_value_heads", heads)
    head_dim_default = hidden // heads if hidden % heads == 0 else None
    head_dim = _int(config, path, "head_dim", head_dim_default)
    if heads % kv_heads:
        raise _fail(
            path, f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
        )
    if head_dim % 2:
        raise _fail(path, f"head_dim {head_dim} must be even for rotary embeddings")
    if _bool(config, path, "mlp_bias", False):
        raise UnsupportedModel(f"{path}: mlp_bias=true cannot be imported")
    if config.get("hidden_act", "silu") != "silu":
        raise UnsupportedModel(
            f"{path}: hidden_act {config.get('hidden_act')!r} cannot be imported; supported: silu"
        )
    layers = _int(config, path, "num_hidden_layers")
    if layers > MAX_LAYERS:
        raise _fail(path, f"num_hidden_layers {layers} exceeds {MAX_LAYERS}")
    rope = _rope_scaling(config, path)
    if rope.kind is RopeKind.LLAMA3 and family.arch is not gguf.MODEL_ARCH.LLAMA:
        raise UnsupportedModel(f"{path}: llama3 rope_scaling is only for Llama models")
    name = config.get("_name_or_path")
    return HParams(
        architecture=architecture,
        family=family,
        layers=layers,
        hidden=hidden,
        intermediate=_int(config, path, "intermediate_size"),
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=_int(config, path, "vocab_size"),
        context_length=_int(config, path, "max_position_embeddings", 4096),
        rope_theta=_float(config, path, "rope_theta", 10000.0),
        rms_eps=_float(config, path, "rms_norm_eps", 1e-6),
        tied_embeddings=_bool(config, path, "tie_word_embeddings", False),
        attention_bias=family.qkv_bias or _bool(config, path, "attention_bias", False),
        rope=rope,
        name=name if isinstance(name, str) else "",
    )
