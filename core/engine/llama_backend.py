"""llama.cpp weights and contexts on the low-level API; every call here blocks its thread."""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

from core.engine.types import FlashAttention, LoadProgress, LoadStage
from core.engine.vocab import Vocab
from core.errors import ModelLoadError

log = logging.getLogger(__name__)
_llama_log = logging.getLogger("llama.cpp")

# ggml levels (1 debug, 2 info, 3 warn, 4 error, 5 continued) -> logging; its INFO is chatty: DEBUG.
_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
# Receives load stages from the loading thread.
ProgressSink = Callable[[LoadProgress], None]


@llama_cpp.llama_log_callback
def _route_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    if text:
        _llama_log.log(
            _LEVELS.get(level, logging.DEBUG), "%s", text.decode("utf-8", "replace").rstrip()
        )


def init_backend() -> None:
    """Route llama.cpp's logging through `logging` and initialise its backends (idempotent)."""
    llama_cpp.llama_log_set(_route_log, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()


def gpu_offload_supported() -> bool:
    return bool(llama_cpp.llama_supports_gpu_offload())


def flash_attn_type(setting: FlashAttention, n_gpu_layers: int) -> int:
    """llama.cpp's flash_attn_type for a setting. AUTO is llama.cpp's own choice only where
    layers run on a GPU. On the CPU it is off, as in llama-cpp-python: measured here, the flash
    kernel generated 52 tokens/s against 77 at 700 tokens of context, and was ahead only for
    about the first hundred."""
    if setting is FlashAttention.ON:
        return int(llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED)
    if setting is FlashAttention.AUTO and n_gpu_layers != 0 and gpu_offload_supported():
        return int(llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO)
    return int(llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)


def flash_attn_off(setting: FlashAttention, n_gpu_layers: int) -> bool:
    """Whether the context is built without flash attention whatever llama.cpp would choose."""
    return flash_attn_type(setting, n_gpu_layers) == llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How to load one model and size its generation context."""

    path: Path
    # The most tokens one sequence (prompt + generated) may hold.
    context_size: int
    threads: int
    n_gpu_layers: int
    # Sequences decoded together (llama.cpp n_seq_max).
    slots: int = 1
    # Cells of the KV cache all slots share (unified KV); at least context_size.
    kv_tokens: int = 0
    batch_size: int = 512
    # Host RAM for KV prefixes of evicted slots.
    prompt_cache_bytes: int = 0
    flash_attn: FlashAttention = FlashAttention.AUTO

    @property
    def kv_cells(self) -> int:
        return max(self.kv_tokens, self.context_size)


class LlamaModel:
    """One GGUF file's weights and vocabulary; contexts are created over it."""

    def __init__(self, opts: LoadOptions, progress: ProgressSink | None = None) -> None:
        self.opts = opts
        self._progress_cb = self._make_progress(progress)
        self.model: llama_cpp.llama_model_p | None = self._load_model()
        self.vocab = Vocab(self.model)
        self.n_embd = int(llama_cpp.llama_model_n_embd(self.model))
        self.size_bytes = int(llama_cpp.llama_model_size(self.model))

    @staticmethod
    def _make_progress(progress: ProgressSink | None) -> object:
        def report(value: float, _user_data: ctypes.c_void_p) -> bool:
            if progress is not None:
                progress(LoadProgress(LoadStage.LOADING_WEIGHTS, float(value)))
            return True  # false would abort the load

        return llama_cpp.llama_progress_callback(report)

    def _load_model(self) -> llama_cpp.llama_model_p:
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = self.opts.n_gpu_layers
        params.progress_callback = self._progress_cb
        model = llama_cpp.llama_model_load_from_file(str(self.opts.path).encode(), params)
        if not model:
            raise ModelLoadError(
                f"llama.cpp could not load {self.opts.path.name} (see the server log)"
            )
        return model

    def new_context(
        self, n_ctx: int, n_batch: int, n_seq_max: int, *, embeddings: bool
    ) -> llama_cpp.llama_context_p:
        """A context over these weights; free it with llama_free before close()."""
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = n_seq_max
        # One KV pool for every sequence: a shared prefix is stored once, any slot may grow.
        params.kv_unified = True
        params.n_threads = self.opts.threads
        params.n_threads_batch = self.opts.threads
        params.no_perf = True
        params.flash_attn_type = flash_attn_type(self.opts.flash_attn, self.opts.n_gpu_layers)
        if embeddings:
            params.embeddings = True
            params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not ctx:
            raise ModelLoadError(f"llama.cpp could not create a context of {n_ctx} tokens")
        return ctx

    def close(self) -> None:
        if self.model:
            llama_cpp.llama_model_free(self.model)
            self.model = None
