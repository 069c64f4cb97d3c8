"""The generation context: unified KV over many sequences, one reusable llama_batch, KV edits."""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np
import numpy.typing as npt

from core.engine.llama_backend import LlamaModel

# llama_decode's "no room in the KV cache for this batch" (the memory state is left unchanged).
DECODE_NO_KV_SLOT = 1


class BatchContext:
    """A llama_context serving `n_seq` sequences; the step thread is its only user."""

    def __init__(self, model: LlamaModel, kv_cells: int, n_batch: int, n_seq: int) -> None:
        # Every slot's decode token must fit one batch, whatever n_batch says.
        n_batch = max(n_batch, n_seq)
        self.n_batch = n_batch
        self.n_vocab = model.vocab.n_vocab
        self._ctx: llama_cpp.llama_context_p | None = model.new_context(
            kv_cells, n_batch, n_seq, embeddings=False
        )
        self.kv_cells = int(llama_cpp.llama_n_ctx(self._ctx))
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        # Sliding-window layers keep only the last n_swa positions of a sequence (0: none).
        self.n_swa = int(llama_cpp.llama_model_n_swa(model.model))
        # Recurrent state cannot be cut at a position: seq_cp copies a whole sequence's state.
        self.partial_copies = not (
            llama_cpp.llama_model_is_recurrent(model.model)
            or llama_cpp.llama_model_is_hybrid(model.model)
        )
        self._batch: llama_cpp.llama_batch | None = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._batch.n_tokens = 0

    @property
    def ctx(self) -> llama_cpp.llama_context_p:
        if self._ctx is None:
            raise RuntimeError("the context is closed")
        return self._ctx

    # --- the batch -------------------------------------------------------------------------------

    def clear_batch(self) -> None:
        if self._batch is not None:
            self._batch.n_tokens = 0

    def add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        """Append one token to the batch; returns its index (where its logits will be)."""
        batch = self._batch
        if batch is None:
            raise RuntimeError("the context is closed")
        i = batch.n_tokens
        if i >= self.n_batch:
            raise RuntimeError(f"batch overflow: {self.n_batch} tokens at most")
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits
        batch.n_tokens = i + 1
        return i

    @property
    def threads(self) -> int:
        """CPU threads the context computes single-token steps with."""
        return int(llama_cpp.llama_n_threads(self.ctx))

    def set_threads(self, n: int) -> None:
        """Compute with `n` CPU threads from the next decode on (between decodes only)."""
        llama_cpp.llama_set_n_threads(self.ctx, n, n)

    def decode(self) -> int:
        """llama_decode's return code: 0 ok, 1 no KV room (nothing changed), else an error."""
        return int(llama_cpp.llama_decode(self.ctx, self._batch))

    def sample(self, chain: llama_cpp.llama_sampler_p, index: int) -> int:
        """Sample at a batch index; the chain accepts the token itself."""
        return int(llama_cpp.llama_sampler_sample(chain, self.ctx, index))

    def argmax(self, index: int) -> int:
        """The most likely token at a batch index (the first of equal maxima)."""
        return int(np.argmax(self.logits(index)))

    def logits(self, index: int) -> npt.NDArray[np.float32]:
        """The raw logits at a batch index (a view, valid until the next decode)."""
        ptr = llama_cpp.llama_get_logits_ith(self.ctx, index)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    # --- KV cache edits --------------------------------------------------------------------------

    def seq_rm(self, seq: int, p0: int = 0, p1: int = -1) -> bool:
        """Drop positions [p0, p1) of a sequence (p1 < 0: to the end)."""
        return bool(llama_cpp.llama_memory_seq_rm(self._mem, seq, p0, p1))

    def seq_cp(self, src: int, dst: int, p0: int = 0, p1: int = -1) -> None:
        """Let `dst` share `src`'s cells for positions [p0, p1): no copy in a unified KV."""
        llama_cpp.llama_memory_seq_cp(self._mem, src, dst, p0, p1)

    def pos_min(self, seq: int) -> int:
        """The smallest position a sequence holds in every layer (-1: none)."""
        return int(llama_cpp.llama_memory_seq_pos_min(self._mem, seq))

    def state_size(self, seq: int) -> int:
        return int(llama_cpp.llama_state_seq_get_size(self.ctx, seq))

    def save_seq(self, seq: int, size: int | None = None) -> bytes:
        """A sequence's KV state, to restore later with restore_seq (`size`: state_size's)."""
        size = self.state_size(seq) if size is None else size
        buf = (ctypes.c_uint8 * size)()
        written = int(llama_cpp.llama_state_seq_get_data(self.ctx, buf, size, seq))
        return ctypes.string_at(buf, written)

    def restore_seq(self, seq: int, data: bytes) -> bool:
        """Load a saved state into an emptied sequence; False when the KV cache has no room."""
        # llama.cpp only reads the buffer: pass the bytes object's own memory, no copy.
        src = ctypes.cast(ctypes.c_char_p(data), ctypes.POINTER(ctypes.c_uint8))
        return int(llama_cpp.llama_state_seq_set_data(self.ctx, src, len(data), seq)) > 0

    def close(self) -> None:
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
