"""Engine construction, chosen by a dict keyed on model format; memory estimates for the budget."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from core.engine.base import Engine
from core.engine.llama_backend import LoadOptions, ProgressSink, gpu_offload_supported
from core.engine.llama_engine import LlamaEngine
from core.metadata.types import HeaderInfo, ModelFormat
from core.registry import ModelSpec

log = logging.getLogger(__name__)


def _warn_if_no_gpu(spec: ModelSpec) -> None:
    if spec.n_gpu_layers != 0 and not gpu_offload_supported():
        log.warning(
            "model %s asks for n_gpu_layers=%d but this llama-cpp-python build has no GPU "
            "offload; it runs on the CPU (see README: GPU)",
            spec.id,
            spec.n_gpu_layers,
        )


def _load_gguf(
    spec: ModelSpec, context_size: int, queue_size: int, progress: ProgressSink
) -> Engine:
    _warn_if_no_gpu(spec)
    opts = LoadOptions(
        path=spec.path,
        context_size=context_size,
        threads=spec.threads,
        n_gpu_layers=spec.n_gpu_layers,
        batch_size=min(512, context_size),
    )
    return LlamaEngine.load(spec.id, opts, queue_size, progress)


# Blocking loaders by format; a format missing here is metadata-only.
LOADERS: dict[ModelFormat, Callable[[ModelSpec, int, int, ProgressSink], Engine]] = {
    ModelFormat.GGUF: _load_gguf,
}


@dataclass(frozen=True, slots=True)
class EngineFactory:
    default_context_size: int
    queue_size: int

    def context_size(self, spec: ModelSpec, header: HeaderInfo) -> int:
        """The configured size, else the trained context capped by the server default."""
        if spec.context_size:
            return spec.context_size
        trained = header.metadata.context_length
        return min(trained, self.default_context_size) if trained else self.default_context_size

    def servable(self, spec: ModelSpec) -> bool:
        return spec.format in LOADERS

    def estimate_bytes(self, spec: ModelSpec, header: HeaderInfo) -> int:
        """Weights plus an f16 KV cache for the context size (GQA-aware when the header says)."""
        meta = header.metadata
        arch = meta.architecture
        heads = _int(header.scalars.get(f"{arch}.attention.head_count"))
        kv_heads = _int(header.scalars.get(f"{arch}.attention.head_count_kv")) or heads
        kv_width = meta.embedding_length * kv_heads // heads if heads else meta.embedding_length
        kv_bytes = 2 * 2 * meta.layer_count * self.context_size(spec, header) * kv_width
        return meta.file_size_bytes + kv_bytes

    async def load(self, spec: ModelSpec, header: HeaderInfo, progress: ProgressSink) -> Engine:
        loader = LOADERS[spec.format]  # the manager checked servable() first
        context = self.context_size(spec, header)
        return await asyncio.to_thread(loader, spec, context, self.queue_size, progress)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
