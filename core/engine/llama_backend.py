"""Synchronous llama.cpp model + context on the low-level API; every call here blocks its thread."""

from __future__ import annotations

import ctypes
import logging
import math
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

from core.engine.sampling import Sampling
from core.engine.types import LoadProgress
from core.errors import InvalidRequest, ModelLoadError

log = logging.getLogger(__name__)
_llama_log = logging.getLogger("llama.cpp")

# ggml levels (1 debug, 2 info, 3 warn, 4 error, 5 continued) -> logging; its INFO is chatty: DEBUG.
_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
_PENALTY_LAST_N = 64
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


@dataclass(frozen=True, slots=True)
class LoadOptions:
    path: Path
    context_size: int
    threads: int
    n_gpu_layers: int
    batch_size: int = 512


def _penalised(s: Sampling) -> bool:
    return (s.repeat_penalty, s.frequency_penalty, s.presence_penalty) != (1.0, 0.0, 0.0)


class LlamaModel:
    """One loaded GGUF model with a generation context (sequence 0) and the KV prefix it holds."""

    def __init__(self, opts: LoadOptions, progress: ProgressSink | None = None) -> None:
        self.opts = opts
        self.ctx: llama_cpp.llama_context_p | None = None
        self._embed_ctx: llama_cpp.llama_context_p | None = None
        self._batch: llama_cpp.llama_batch | None = None
        self._progress_cb = self._make_progress(progress)
        self.model = self._load_model()
        if progress is not None:
            progress(LoadProgress("creating_context", 1.0, "allocating the KV cache"))
        try:
            self._init_context(opts)
        except BaseException:
            self.close()  # a failed context must not leak the weights
            raise

    def _init_context(self, opts: LoadOptions) -> None:
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.n_embd = int(llama_cpp.llama_model_n_embd(self.model))
        self.ctx = self._new_context(opts.context_size, opts.batch_size, embeddings=False)
        self.n_ctx = int(llama_cpp.llama_n_ctx(self.ctx))
        self._batch = llama_cpp.llama_batch_init(max(opts.batch_size, 1), 0, 1)
        self.cached: list[int] = []  # tokens whose keys/values sequence 0 holds, in order
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.bos_text = self._special_text(llama_cpp.llama_vocab_bos(self.vocab))
        self.eos_text = self._special_text(llama_cpp.llama_vocab_eos(self.vocab))
        self.size_bytes = int(llama_cpp.llama_model_size(self.model))

    @staticmethod
    def _make_progress(progress: ProgressSink | None) -> object:
        def report(value: float, _user_data: ctypes.c_void_p) -> bool:
            if progress is not None:
                progress(LoadProgress("loading_weights", float(value)))
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

    def _new_context(
        self, n_ctx: int, n_batch: int, *, embeddings: bool
    ) -> llama_cpp.llama_context_p:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = 1
        params.n_threads = self.opts.threads
        params.n_threads_batch = self.opts.threads
        params.no_perf = True
        if embeddings:
            params.embeddings = True
            params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
        ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not ctx:
            raise ModelLoadError(f"llama.cpp could not create a context of {n_ctx} tokens")
        return ctx

    def close(self) -> None:
        if self._embed_ctx:
            llama_cpp.llama_free(self._embed_ctx)
            self._embed_ctx = None
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self.ctx:
            llama_cpp.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            llama_cpp.llama_model_free(self.model)
            self.model = None

    # --- tokenizer -----------------------------------------------------------------------------

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        for _ in range(2):
            buf = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(
                self.vocab, data, len(data), buf, capacity, add_special, parse_special
            )
            if n >= 0:
                return list(buf[:n])
            capacity = -n
        raise InvalidRequest("the text could not be tokenized", param="text")

    def piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
        return buf.raw[:n]

    def detokenize(self, tokens: Sequence[int]) -> str:
        arr = (llama_cpp.llama_token * max(len(tokens), 1))(*tokens)
        capacity = 8 * len(tokens) + 16
        for _ in range(2):
            buf = ctypes.create_string_buffer(capacity)
            n = llama_cpp.llama_detokenize(
                self.vocab, arr, len(tokens), buf, capacity, False, False
            )
            if n >= 0:
                return buf.raw[:n].decode("utf-8", "replace")
            capacity = -n
        raise InvalidRequest("the token ids could not be detokenized", param="token_ids")

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def _special_text(self, token: int) -> str:
        if token < 0 or token >= self.n_vocab:
            return ""
        text = llama_cpp.llama_vocab_get_text(self.vocab, token)
        return text.decode("utf-8", "replace") if text else ""

    # --- evaluation ----------------------------------------------------------------------------

    def reuse_prefix(self, prompt: Sequence[int]) -> int:
        """Keep the longest cached prefix of `prompt` (at least one token is always re-evaluated)."""
        keep = 0
        for a, b in zip(self.cached, prompt, strict=False):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(prompt) - 1)
        mem = llama_cpp.llama_get_memory(self.ctx)
        if not llama_cpp.llama_memory_seq_rm(mem, 0, keep, -1):
            llama_cpp.llama_memory_clear(mem, True)
            keep = 0
        del self.cached[keep:]
        return keep

    def decode(self, tokens: Sequence[int], cancelled: threading.Event | None = None) -> bool:
        """Append tokens to sequence 0, logits for the last one only; False if cancelled between
        batches (what was decoded stays cached)."""
        step = self.opts.batch_size
        for start in range(0, len(tokens), step):
            if cancelled is not None and cancelled.is_set():
                return False
            part = tokens[start : start + step]
            last = start + step >= len(tokens)
            self._fill_batch(part, len(self.cached), logits_last=last)
            rc = llama_cpp.llama_decode(self.ctx, self._batch)
            if rc != 0:
                self.cached.clear()
                llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
                raise RuntimeError(f"llama_decode failed with code {rc}")
            self.cached.extend(part)
        return True

    def _fill_batch(self, tokens: Sequence[int], pos0: int, *, logits_last: bool) -> None:
        batch = self._batch
        if batch is None:
            raise RuntimeError("the model is closed")
        batch.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = pos0 + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 0
        if logits_last and tokens:
            batch.logits[len(tokens) - 1] = 1

    def new_sampler(self, sampling: Sampling, history: Sequence[int]) -> llama_cpp.llama_sampler_p:
        """A C-side sampler chain for one request; the caller frees it with free_sampler."""
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        try:
            for stage in self._sampler_stages(sampling):
                llama_cpp.llama_sampler_chain_add(chain, stage)  # the chain owns it from here
            if _penalised(sampling):  # penalties also look at the end of the prompt
                for token in history[-_PENALTY_LAST_N:]:
                    llama_cpp.llama_sampler_accept(chain, token)
        except BaseException:
            llama_cpp.llama_sampler_free(chain)
            raise
        return chain

    def _sampler_stages(self, s: Sampling) -> list[llama_cpp.llama_sampler_p]:
        stages = []
        if s.logit_bias:
            items = [
                llama_cpp.llama_logit_bias(token=t, bias=-math.inf if b <= -100 else b)
                for t, b in s.logit_bias.items()
            ]
            arr = (llama_cpp.llama_logit_bias * len(items))(*items)
            stages.append(llama_cpp.llama_sampler_init_logit_bias(self.n_vocab, len(items), arr))
        if _penalised(s):
            stages.append(
                llama_cpp.llama_sampler_init_penalties(
                    self.n_vocab,
                    _PENALTY_LAST_N,
                    s.repeat_penalty,
                    s.frequency_penalty,
                    s.presence_penalty,
                )
            )
        if s.temperature <= 0.0:
            return [*stages, llama_cpp.llama_sampler_init_greedy()]
        if s.top_k > 0:
            stages.append(llama_cpp.llama_sampler_init_top_k(s.top_k))
        seed = s.seed if s.seed is not None else secrets.randbits(32)
        return [
            *stages,
            llama_cpp.llama_sampler_init_top_p(s.top_p, 1),
            llama_cpp.llama_sampler_init_min_p(s.min_p, 1),
            llama_cpp.llama_sampler_init_temp(s.temperature),
            llama_cpp.llama_sampler_init_dist(seed),
        ]

    @staticmethod
    def free_sampler(chain: llama_cpp.llama_sampler_p) -> None:
        llama_cpp.llama_sampler_free(chain)

    def sample(self, chain: llama_cpp.llama_sampler_p) -> int:
        """Sample from the last decoded position (the sampler accepts the token itself)."""
        return int(llama_cpp.llama_sampler_sample(chain, self.ctx, -1))

    # --- embeddings ----------------------------------------------------------------------------

    def embed(self, tokens: Sequence[int]) -> list[float]:
        """Mean-pooled embedding of one input, in a separate context that shares the weights."""
        if self._embed_ctx is None:
            self._embed_ctx = self._new_context(
                self.embed_context_size, self.embed_context_size, embeddings=True
            )
        ctx = self._embed_ctx
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        batch = llama_cpp.llama_batch_init(len(tokens), 0, 1)
        try:
            batch.n_tokens = len(tokens)
            for i, token in enumerate(tokens):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, i, 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 1
            rc = llama_cpp.llama_decode(ctx, batch)
            if rc != 0:
                raise RuntimeError(f"llama_decode (embeddings) failed with code {rc}")
            vec = llama_cpp.llama_get_embeddings_seq(ctx, 0)
            return [float(vec[i]) for i in range(self.n_embd)]
        finally:
            llama_cpp.llama_batch_free(batch)

    @property
    def embed_context_size(self) -> int:
        # The whole input must fit one micro-batch for pooling; keep the compute buffer modest.
        return min(self.n_ctx, 2048)
