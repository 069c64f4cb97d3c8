"""Engine construction for registry specs, chosen by a dict keyed on model format; memory estimates."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from core.engine.base import Engine
from core.engine.llama_backend import (
    LoadOptions,
    ProgressSink,
    flash_attn_off,
    gpu_offload_supported,
)
from core.engine.llama_engine import LlamaEngine
from core.engine.types import LoadProgress, LoadStage
from core.errors import InvalidRequest, MinervaError
from core.importer.hparams import FAMILIES
from core.importer.importer import Importer
from core.metadata.gguf_reader import read_gguf
from core.metadata.hparams_check import check_hyperparameters
from core.metadata.reader import PICKLE_REFUSAL
from core.metadata.safetensors_reader import HF_ARCHITECTURE_KEY
from core.metadata.types import HeaderInfo, ModelFormat
from core.metadata.vocab_check import check_vocabulary
from core.registry import ModelSpec
from core.settings import auto_slots, default_kv_cache_tokens

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sizing:
    """How big a model's generation context is."""

    context_size: int  # per sequence
    slots: int
    kv_cache_tokens: int  # shared by all slots


def batch_size(context_size: int) -> int:
    """Tokens one decode takes (llama.cpp n_batch and n_ubatch)."""
    return min(512, context_size)


def _warn_if_no_gpu(spec: ModelSpec) -> None:
    if spec.n_gpu_layers != 0 and not gpu_offload_supported():
        log.warning(
            "model %s asks for n_gpu_layers=%d but this llama-cpp-python build has no GPU "
            "offload; it runs on the CPU (see README: GPU)",
            spec.id,
            spec.n_gpu_layers,
        )


def _load_gguf(
    spec: ModelSpec, sizing: Sizing, factory: EngineFactory, progress: ProgressSink
) -> Engine:
    _warn_if_no_gpu(spec)
    # Before llama.cpp, which would abort the process on these (an imported checkpoint's GGUF
    # included: its config is the client's too).
    check_hyperparameters(spec.path, read_gguf(spec.path))
    check_vocabulary(spec.path)
    opts = LoadOptions(
        path=spec.path,
        context_size=sizing.context_size,
        threads=spec.threads,
        n_gpu_layers=spec.n_gpu_layers,
        slots=sizing.slots,
        kv_tokens=sizing.kv_cache_tokens,
        batch_size=batch_size(sizing.context_size),
        prompt_cache_bytes=factory.prompt_cache_bytes,
        flash_attn=spec.flash_attn,
    )
    return LlamaEngine.load(spec.id, opts, factory.queue_size, progress)


# Blocking loaders by format; a format missing here is metadata-only.
LOADERS: dict[ModelFormat, Callable[[ModelSpec, Sizing, EngineFactory, ProgressSink], Engine]] = {
    ModelFormat.GGUF: _load_gguf,
}


@dataclass(frozen=True, slots=True)
class EngineFactory:
    default_context_size: int
    queue_size: int
    prompt_cache_bytes: int = 0
    # Turns SafeTensors checkpoints into GGUF; None: they stay metadata-only.
    importer: Importer | None = None

    def context_size(
        self, spec: ModelSpec, header: HeaderInfo, requested: int | None = None
    ) -> int:
        """Per sequence: what a request asked for (Ollama's num_ctx), clamped to the trained
        context (to the configured size when the file does not say); else the configured size,
        else the trained context capped by the default."""
        trained = header.metadata.context_length
        if requested:
            return min(requested, trained or self.context_size(spec, header))
        if spec.context_size:
            return spec.context_size
        return min(trained, self.default_context_size) if trained else self.default_context_size

    def requested_context(
        self, spec: ModelSpec, header: HeaderInfo, requested: int, budget_bytes: int
    ) -> int:
        """The context size a request's `context_size` loads with (clamped to the trained
        context); INVALID_ARGUMENT below 1, or when a size larger than the configured one would
        alone need more than the memory budget."""
        if requested < 1:
            raise InvalidRequest("context_size must be at least 1", param="context_size")
        size = self.context_size(spec, header, requested)
        needed = self.estimate_bytes(spec, header, size)
        if needed > budget_bytes and size > self.context_size(spec, header):
            raise InvalidRequest(
                f"context_size {size} needs about {needed // 2**20} MB for model {spec.id!r}, "
                f"more than the memory budget of {budget_bytes // 2**20} MB",
                param="context_size",
            )
        return size

    def sizing(self, spec: ModelSpec, header: HeaderInfo, requested: int | None = None) -> Sizing:
        context = self.context_size(spec, header, requested)
        slots = spec.slots or auto_slots(context)
        kv = spec.kv_cache_tokens or default_kv_cache_tokens(context, slots)
        return Sizing(context, slots, max(kv, context))

    def servable(self, spec: ModelSpec, header: HeaderInfo | None = None) -> bool:
        """Whether an engine can serve the model; with its header, a SafeTensors checkpoint also
        needs an importable architecture."""
        if self.refusal(spec) is not None:
            return False
        if header is None or spec.format is not ModelFormat.SAFETENSORS:
            return True
        return header.scalars.get(HF_ARCHITECTURE_KEY) in FAMILIES

    def refusal(self, spec: ModelSpec) -> str | None:
        """Why no engine can serve this model's format; None when one can (after import)."""
        if spec.format in LOADERS:
            return None
        if spec.format is ModelFormat.SAFETENSORS and self.importer is not None:
            return None
        if spec.format is ModelFormat.PICKLE:
            return f"model {spec.id!r}: {PICKLE_REFUSAL}"
        return f"model {spec.id!r} is {spec.format.value}: no engine serves that format"

    async def prepare(self, spec: ModelSpec, progress: ProgressSink) -> ModelSpec:
        """The spec to load: a SafeTensors checkpoint becomes its cached GGUF (converted first
        when needed, reporting "converting" progress); other formats load as they are."""
        if spec.format is not ModelFormat.SAFETENSORS or self.importer is None:
            return spec
        message = f"converting to a {spec.import_type.value} GGUF"

        def report(fraction: float) -> None:
            progress(LoadProgress(LoadStage.CONVERTING, fraction, message))

        importer = self.importer
        try:
            path = await asyncio.to_thread(
                importer.ensure_gguf, spec.id, spec.path, spec.import_type, report
            )
        except MinervaError as exc:
            raise type(exc)(f"model {spec.id!r}: {exc.message}", param=exc.param) from exc
        return replace(spec, path=path, format=ModelFormat.GGUF)

    def cancel_imports(self) -> None:
        if self.importer is not None:
            self.importer.cancel()

    def estimate_bytes(
        self, spec: ModelSpec, header: HeaderInfo, requested: int | None = None
    ) -> int:
        """Weights, the shared f16 KV cache of every slot (GQA-aware), the prompt cache, and,
        without flash attention, the attention scores a full batch needs over the whole pool
        (f32 per cell, batch token and head: measured 604 MiB of llama.cpp's 646 MiB compute
        buffer at 32768 cells for the default model, 98 MiB with flash attention)."""
        meta = header.metadata
        sizing = self.sizing(spec, header, requested)
        cells = sizing.kv_cache_tokens
        kv_bytes = 2 * meta.layer_count * cells * _kv_width(header)  # f16
        scores = 0
        if flash_attn_off(spec.flash_attn, spec.n_gpu_layers):
            scores = 4 * cells * batch_size(sizing.context_size) * (_heads(header) or 1)  # f32
        return meta.file_size_bytes + kv_bytes + scores + self.prompt_cache_bytes

    async def load(
        self,
        spec: ModelSpec,
        header: HeaderInfo,
        progress: ProgressSink,
        requested: int | None = None,
    ) -> Engine:
        """`requested`: the context size a request asked for (see context_size)."""
        loader = LOADERS[spec.format]  # the manager checked servable() first
        sizing = self.sizing(spec, header, requested)
        return await asyncio.to_thread(loader, spec, sizing, self, progress)


def _kv_width(header: HeaderInfo) -> int:
    """Keys plus values per token and layer: KV heads x (key + value length) when known."""
    meta, scalars = header.metadata, header.scalars
    arch = meta.architecture
    heads = _heads(header)
    if not heads:
        return 2 * meta.embedding_length
    kv_heads = _int(scalars.get(f"{arch}.attention.head_count_kv")) or heads
    key = _int(scalars.get(f"{arch}.attention.key_length")) or meta.embedding_length // heads
    value = _int(scalars.get(f"{arch}.attention.value_length")) or key
    return kv_heads * (key + value)


def _heads(header: HeaderInfo) -> int:
    """Attention (query) heads; 0 when the header does not say."""
    return _int(header.scalars.get(f"{header.metadata.architecture}.attention.head_count"))


def _int(value: object) -> int:
    """A positive header count, else 0 (unknown): a hostile file's negative head count must not
    shrink the memory estimate."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
