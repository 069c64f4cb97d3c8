"""Which GGUF tensor each checkpoint tensor becomes: names, expected shapes, output types, and
the per-tensor transforms (q/k permutation, BF16 widening), read by mmap one tensor at a time."""

from __future__ import annotations

import contextlib
import math
import mmap
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from core.errors import InvalidModelFile, UnsupportedModel
from core.importer.hparams import HParams, RopeKind
from core.metadata.safetensors_reader import TensorEntry
from core.settings import ImportType

Q8_BLOCK, Q8_BLOCK_BYTES = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0]
# Rows converted at once: bounds the float32 copy of one large tensor (e.g. the embeddings).
CHUNK_ELEMENTS = 2 << 20
_SOURCE_DTYPES: dict[str, np.dtype[Any]] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
}
# Checkpoint entries that carry nothing llama.cpp needs (recomputed from rope_theta).
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)

Transform = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True, slots=True)
class TensorJob:
    """One GGUF tensor: where its values come from and how they are written."""

    name: str  # GGUF name, e.g. "blk.0.attn_q.weight"
    shape: tuple[int, ...]  # numpy order: (rows, columns)
    qtype: gguf.GGMLQuantizationType
    source: TensorEntry | None  # None: computed, see `values`
    transform: Transform | None = None  # needs the whole tensor (never chunked)
    values: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return output_nbytes(self.shape, self.qtype)


def output_nbytes(shape: tuple[int, ...], qtype: gguf.GGMLQuantizationType) -> int:
    block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    return math.prod(shape) // block * block_bytes


def _permute(heads: int) -> Transform:
    """Llama's q/k rows from halves-rotation order to llama.cpp's adjacent pairs (per head)."""

    def permute(w: np.ndarray) -> np.ndarray:
        rows = w.shape[0]
        return w.reshape(heads, 2, rows // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    return permute


def _expected(hp: HParams) -> dict[str, tuple[tuple[int, ...], Transform | None]]:
    """Every checkpoint tensor this family needs, by Hugging Face name: shape and transform."""
    h, q_rows, kv_rows = hp.hidden, hp.heads * hp.head_dim, hp.kv_heads * hp.head_dim
    permute = hp.family.permute_qk
    q_fix = _permute(hp.heads) if permute else None
    k_fix = _permute(hp.kv_heads) if permute else None
    out: dict[str, tuple[tuple[int, ...], Transform | None]] = {
        "model.embed_tokens.weight": ((hp.vocab_size, h), None),
        "model.norm.weight": ((h,), None),
    }
    if not hp.tied_embeddings:
        out["lm_head.weight"] = ((hp.vocab_size, h), None)
    for i in range(hp.layers):
        p = f"model.layers.{i}."
        out |= {
            p + "input_layernorm.weight": ((h,), None),
            p + "post_attention_layernorm.weight": ((h,), None),
            p + "self_attn.q_proj.weight": ((q_rows, h), q_fix),
            p + "self_attn.k_proj.weight": ((kv_rows, h), k_fix),
            p + "self_attn.v_proj.weight": ((kv_rows, h), None),
            p + "self_attn.o_proj.weight": ((h, q_rows), None),
            p + "mlp.gate_proj.weight": ((hp.intermediate, h), None),
            p + "mlp.up_proj.weight": ((hp.intermediate, h), None),
            p + "mlp.down_proj.weight": ((h, hp.intermediate), None),
        }
        if hp.attention_bias:
            out |= {
                p + "self_attn.q_proj.bias": ((q_rows,), q_fix),
                p + "self_attn.k_proj.bias": ((kv_rows,), k_fix),
                p + "self_attn.v_proj.bias": ((kv_rows,), None),
            }
            if not hp.family.qkv_bias:  # Llama's attention_bias covers o_proj too
                out[p + "self_attn.o_proj.bias"] = ((h,), None)
    return out


def _output_type(shape: tuple[int, ...], wanted: ImportType) -> gguf.GGMLQuantizationType:
    if len(shape) == 1:
        return gguf.GGMLQuantizationType.F32  # norms and biases stay exact
    if wanted is ImportType.Q8_0 and shape[-1] % Q8_BLOCK == 0:
        return gguf.GGMLQuantizationType.Q8_0
    return gguf.GGMLQuantizationType.F16


def llama3_rope_factors(hp: HParams) -> np.ndarray:
    """Per-frequency divisors for Llama 3.1 style RoPE scaling (llama.cpp's rope_freqs tensor)."""
    rope = hp.rope
    freqs = 1.0 / (hp.rope_theta ** (np.arange(0, hp.head_dim, 2, dtype=np.float64) / hp.head_dim))
    wavelen = 2 * math.pi / freqs
    low_wavelen = rope.original_context / rope.low_freq_factor
    high_wavelen = rope.original_context / rope.high_freq_factor
    smooth = (rope.original_context / wavelen - rope.low_freq_factor) / (
        rope.high_freq_factor - rope.low_freq_factor
    )
    factors = np.where(
        wavelen < high_wavelen,
        1.0,
        np.where(wavelen > low_wavelen, rope.factor, 1 / ((1 - smooth) / rope.factor + smooth)),
    )
    return factors.astype(np.float32)


_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


class _GgufNames:
    """gguf's tensor-name map for one block, applied to any layer: building the map for every
    layer costs time and memory in proportion to the layer count a config claims."""

    def __init__(self, arch: gguf.MODEL_ARCH) -> None:
        self._map = gguf.get_tensor_name_map(arch, 1)

    def get_name(self, hf_name: str, try_suffixes: tuple[str, ...]) -> str | None:
        layer = _LAYER.match(hf_name)
        if layer is None:
            return self._map.get_name(hf_name, try_suffixes=try_suffixes)
        as_first = "model.layers.0." + hf_name[layer.end() :]
        name = self._map.get_name(as_first, try_suffixes=try_suffixes)
        if name is None or not name.startswith("blk.0."):
            return None
        return f"blk.{layer.group(1)}." + name[len("blk.0.") :]


def plan_tensors(
    hp: HParams, entries: dict[str, TensorEntry], wanted: ImportType, where: Path
) -> list[TensorJob]:
    """Match the checkpoint against its config; InvalidModelFile names the first mismatch."""
    if hp.layers * 9 > len(entries):  # before listing what a hostile layer count would need
        raise InvalidModelFile(
            f"{where}: num_hidden_layers {hp.layers} needs at least {hp.layers * 9} tensors, "
            f"the checkpoint has {len(entries)}"
        )
    expected = _expected(hp)
    names = _GgufNames(hp.family.arch)
    jobs: list[TensorJob] = []
    for hf_name in sorted(entries):
        if hf_name.endswith(_IGNORED_SUFFIXES) or (
            hp.tied_embeddings and hf_name == "lm_head.weight"
        ):
            continue
        entry = entries[hf_name]
        if hf_name not in expected:
            raise InvalidModelFile(
                f"{where}: tensor {hf_name!r} is not part of a {hp.architecture} checkpoint "
                f"with this config.json"
            )
        shape, transform = expected[hf_name]
        if entry.shape != shape:
            raise InvalidModelFile(
                f"{where}: tensor {hf_name!r} has shape {list(entry.shape)}, but config.json "
                f"implies {list(shape)}"
            )
        if entry.dtype not in _SOURCE_DTYPES:
            raise UnsupportedModel(
                f"{where}: tensor {hf_name!r} is {entry.dtype}; importable: F32, F16, BF16"
            )
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:  # every expected name maps; a gguf package change would land here
            raise UnsupportedModel(f"{where}: tensor {hf_name!r} has no GGUF name")
        jobs.append(TensorJob(gguf_name, shape, _output_type(shape, wanted), entry, transform))
    missing = sorted(set(expected) - set(entries))
    if missing:
        raise InvalidModelFile(
            f"{where}: tensor {missing[0]!r} is missing ({len(missing)} expected tensors absent)"
        )
    if hp.rope.kind is RopeKind.LLAMA3:
        factors = llama3_rope_factors(hp)
        name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
        jobs.append(
            TensorJob(name, factors.shape, gguf.GGMLQuantizationType.F32, None, values=factors)
        )
    return jobs


class SourceMaps:
    """Read-only maps of the checkpoint's files. Pages a tensor used are dropped from this
    process's memory once it is written (they stay in the page cache), so resident memory is
    one tensor, not the model."""

    def __init__(self) -> None:
        self._maps: dict[Path, mmap.mmap] = {}

    def view(self, entry: TensorEntry) -> np.ndarray:
        """The tensor as a view of its file (no copy); BF16 comes back as raw uint16."""
        mapped = self._maps.get(entry.file)
        if mapped is None:
            with entry.file.open("rb") as fh:
                mapped = self._maps[entry.file] = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        dtype = _SOURCE_DTYPES[entry.dtype]
        count = entry.nbytes // dtype.itemsize
        return np.frombuffer(mapped, dtype, count, entry.offset).reshape(entry.shape)

    def release(self, entry: TensorEntry, begin: int = 0, end: int | None = None) -> None:
        """Drop the pages of bytes [begin, end) of the tensor (all of it by default)."""
        mapped = self._maps.get(entry.file)
        if mapped is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        first = entry.offset + begin
        first -= first % mmap.PAGESIZE
        last = entry.offset + (entry.nbytes if end is None else end)
        if last > first:
            mapped.madvise(mmap.MADV_DONTNEED, first, last - first)

    def close(self) -> None:
        for mapped in self._maps.values():
            with contextlib.suppress(BufferError):  # a view still alive: the GC unmaps it
                mapped.close()
        self._maps.clear()


def _to_float32(values: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        wide = values.astype(np.uint32)
        wide <<= 16  # in place: one float32-sized copy, not two
        return wide.view(np.float32)
    return values.astype(np.float32, copy=False)


def _encode(values: np.ndarray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    if qtype is gguf.GGMLQuantizationType.Q8_0:
        return gguf.quants.quantize(values, qtype)
    return values.astype(np.float16 if qtype is gguf.GGMLQuantizationType.F16 else np.float32)


def encoded_chunks(job: TensorJob, maps: SourceMaps) -> Iterator[np.ndarray]:
    """The job's output bytes in row chunks, so one tensor's float32 copy stays bounded."""
    if job.values is not None:
        yield _encode(job.values, job.qtype)
        return
    assert job.source is not None
    source = maps.view(job.source)
    if job.transform is not None or source.ndim == 1:
        whole = _to_float32(source, job.source.dtype)
        yield _encode(job.transform(whole) if job.transform else whole, job.qtype)
    else:
        step = max(1, CHUNK_ELEMENTS // source.shape[1])
        row_bytes = job.source.nbytes // source.shape[0]
        same = job.source.dtype == "F16" and job.qtype is gguf.GGMLQuantizationType.F16
        for start in range(0, source.shape[0], step):
            rows = source[start : start + step]
            yield rows if same else _encode(_to_float32(rows, job.source.dtype), job.qtype)
            maps.release(job.source, start * row_bytes, (start + step) * row_bytes)
    del source
    maps.release(job.source)
