"""Embeddings on their own context and thread, so a large embedding call never blocks chat."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import llama_cpp

from core.engine import openmp
from core.engine.llama_backend import LlamaModel

# The whole input must fit one micro-batch for pooling; keep the compute buffer modest.
MAX_EMBED_TOKENS = 2048


class Embedder:
    """Mean-pooled embeddings in a context created on first use; blocking, one caller at a time."""

    def __init__(self, model: LlamaModel, context_size: int) -> None:
        self._model = model
        self.max_tokens = min(context_size, MAX_EMBED_TOKENS)
        self._ctx: llama_cpp.llama_context_p | None = None
        # CPU threads to compute with, set from the event loop; applied on the embedding thread
        # before its next decode (the context is created with the configured count).
        self.threads = model.opts.threads
        self._threads_applied = model.opts.threads

    def embed_all(
        self, inputs: Sequence[Sequence[int]], cancelled: threading.Event
    ) -> list[list[float]]:
        """One vector per input; stops early (returning what it has) once `cancelled` is set."""
        vectors = []
        try:
            for tokens in inputs:
                if cancelled.is_set():
                    break
                vectors.append(self.embed(tokens))
        finally:
            openmp.release_threads()  # this thread computes again only on the next call
        return vectors

    def embed(self, tokens: Sequence[int]) -> list[float]:
        if self._ctx is None:
            self._ctx = self._model.new_context(
                self.max_tokens, self.max_tokens, 1, embeddings=True
            )
        ctx = self._ctx
        if self.threads != self._threads_applied:
            llama_cpp.llama_set_n_threads(ctx, self.threads, self.threads)
            self._threads_applied = self.threads
        # Cells only: the tensors' stale contents are masked out (zeroing them cost ~5 ms a call).
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), False)
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
            return [float(vec[i]) for i in range(self._model.n_embd)]
        finally:
            llama_cpp.llama_batch_free(batch)

    def close(self) -> None:
        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
