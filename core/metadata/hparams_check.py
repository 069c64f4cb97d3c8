"""GGUF hyperparameters llama.cpp asserts on, refused before it sees them: a GGML_ASSERT aborts
the whole process (measured: block_count 0 or 1000 while loading; a negative or NaN norm epsilon
at the first decode), where a refused file costs nobody else anything.

The rules mirror llama_model::load_hparams (and ggml's norm kernels) of the llama.cpp that the
pinned llama-cpp-python vendors, per-layer counts (an array of one value per layer) included.
"""

from __future__ import annotations

from pathlib import Path

from core.errors import InvalidModelFile
from core.metadata.types import HeaderInfo

MAX_LAYERS = 512  # LLAMA_MAX_LAYERS
MAX_EXPERTS = 1024  # LLAMA_MAX_EXPERTS
EPSILONS = ("layer_norm_epsilon", "layer_norm_rms_epsilon", "group_norm_epsilon")
ROPE_SCALING = ("none", "linear", "yarn", "longrope")  # LLAMA_ROPE_SCALING_TYPES
# Architectures whose one "expert" llama.cpp reads as none (load_hparams does so itself).
NO_SINGLE_EXPERT = ("hunyuan-dense", "hunyuan_vl")


def check_hyperparameters(path: Path, header: HeaderInfo) -> None:
    """InvalidModelFile naming the first value llama.cpp would abort on."""
    problem = hyperparameter_problem(header)
    if problem is not None:
        raise InvalidModelFile(f"{path}: {problem}; llama.cpp would abort on it")


def hyperparameter_problem(header: HeaderInfo) -> str | None:
    """What llama.cpp would abort on, or None."""
    arch = header.metadata.architecture
    counts = _Counts(arch, header)
    layers = counts.get("block_count")
    if layers is not None and not 0 < layers <= MAX_LAYERS:
        return f"{arch}.block_count is {layers}, outside 1..{MAX_LAYERS}"
    for name in ("nextn_predict_layers", "posnet.block_count", "convnext.block_count"):
        value = counts.get(name)
        if layers is not None and value is not None and not 0 <= value <= layers:
            return f"{arch}.{name} is {value}, outside 0..{layers} (its block_count)"
    problem = _experts(counts, layers)
    if problem is not None:
        return problem
    for name in EPSILONS:
        eps = header.scalars.get(f"{arch}.attention.{name}")
        if isinstance(eps, float) and not eps >= 0.0:  # NaN too
            return f"{arch}.attention.{name} is {eps}, not a number >= 0"
    problem = _rope_dimensions(counts)
    if problem is not None:
        return problem
    scaling = header.scalars.get(f"{arch}.rope.scaling.type")
    if isinstance(scaling, str) and scaling.partition("\0")[0] not in ROPE_SCALING:
        return f"{arch}.rope.scaling.type is {scaling[:32]!r}, none of {', '.join(ROPE_SCALING)}"
    return None


class _Counts:
    """The architecture's integer hyperparameters by name (None: absent or not an integer)."""

    def __init__(self, arch: str, header: HeaderInfo) -> None:
        self.arch = arch
        self._scalars = header.scalars
        self._arrays = header.small_arrays

    def largest(self, name: str, layers: int | None) -> int | None:
        """The value, or the largest of a per-layer array as llama.cpp reads it into uint32s
        (an array of another length than the layers it refuses itself: None)."""
        values = self._arrays.get(f"{self.arch}.{name}")
        if values is None:
            return self.get(name)
        if layers is None or len(values) != layers:
            return None
        return max((v & 0xFFFFFFFF for v in values), default=0)

    def get(self, name: str) -> int | None:
        value = self._scalars.get(f"{self.arch}.{name}")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


def _rope_dimensions(counts: _Counts) -> str | None:
    """ggml's rope kernel asserts on an odd count or one wider than a head (measured on a
    gemma3 file, at the first decode); llama.cpp checks it when loading for a few
    architectures only."""
    rope = counts.get("rope.dimension_count")
    if rope is None:
        return None
    if rope % 2:
        return f"{counts.arch}.rope.dimension_count is {rope}, an odd number"
    head = counts.get("attention.key_length")
    if head is None:
        embedding, heads = counts.get("embedding_length"), counts.get("attention.head_count")
        head = embedding // heads if embedding and heads else None
    if head and rope > head:
        return f"{counts.arch}.rope.dimension_count is {rope}, wider than a head ({head})"
    return None


def _experts(counts: _Counts, layers: int | None) -> str | None:
    experts = counts.get("expert_count") or 0
    used = counts.largest("expert_used_count", layers) or 0  # llama.cpp: n_expert_used_max()
    groups = counts.get("expert_group_count") or 0
    groups_used = counts.get("expert_group_used_count") or 0
    if counts.arch in NO_SINGLE_EXPERT and experts <= 1:
        experts = used = 0
    where = f"{counts.arch}.expert_count is {experts}"
    if not 0 <= experts <= MAX_EXPERTS:
        return f"{where}, outside 0..{MAX_EXPERTS}"
    if experts == 0:
        return f"{where}, yet experts are used or grouped" if used or groups else None
    if not 0 < used <= experts:
        return f"{where} and expert_used_count {used}, outside 1..{experts}"
    if not 0 <= groups < experts:
        return f"{where} and expert_group_count {groups}, not below it"
    if groups > 1 and (experts % groups or not 0 < groups_used < groups):
        return (
            f"{where} in {groups} groups, {groups_used} used: the groups must divide the "
            f"experts and 1..{groups - 1} be used"
        )
    return None
