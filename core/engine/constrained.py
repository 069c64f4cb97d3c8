"""Grammar-constrained sampling that costs little per token: sample freely, then check the token.

As llama.cpp's common sampler does: the sampler chain picks a token from the raw candidates; the
grammar checks that one token; only when it rejects it does the grammar mask the whole
vocabulary and the chain pick again. Both then accept the final token.
"""

from __future__ import annotations

import ctypes
import math

import llama_cpp
import numpy as np
import numpy.typing as npt

from core.engine.vocab import Vocab
from core.errors import InvalidRequest

_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")], align=False)


class Candidates:
    """A reusable llama_token_data_array over a numpy buffer of the whole vocabulary."""

    def __init__(self, n_vocab: int) -> None:
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._data = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        self._array = llama_cpp.llama_token_data_array(
            data=self._data.ctypes.data_as(llama_cpp.llama_token_data_p),
            size=n_vocab,
            selected=-1,
            sorted=False,
        )
        self._one = (llama_cpp.llama_token_data * 1)()
        self._one_array = llama_cpp.llama_token_data_array(
            data=ctypes.cast(self._one, llama_cpp.llama_token_data_p),
            size=1,
            selected=-1,
            sorted=False,
        )

    def fill(self, logits: npt.NDArray[np.float32]) -> ctypes.Array[llama_cpp.llama_token_data]:
        """Every token with its raw logit; returns the array to apply samplers to."""
        self._data["id"] = self._ids
        self._data["logit"] = logits
        self._data["p"] = 0.0
        self._array.size = self._data.shape[0]
        self._array.selected = -1
        self._array.sorted = False
        return ctypes.pointer(self._array)  # type: ignore[return-value]

    def selected(self) -> int:
        return int(self._array.data[self._array.selected].id)

    def selected_is_masked(self) -> bool:
        return self._array.selected < 0 or self._array.data[self._array.selected].logit == -math.inf

    def allows(self, grammar: llama_cpp.llama_sampler_p, token: int) -> bool:
        """Whether the grammar accepts this token next."""
        self._one[0].id, self._one[0].logit, self._one[0].p = token, 1.0, 0.0
        self._one_array.size, self._one_array.selected = 1, -1
        llama_cpp.llama_sampler_apply(grammar, ctypes.pointer(self._one_array))
        return not math.isinf(self._one[0].logit)


def sample_constrained(
    chain: llama_cpp.llama_sampler_p,
    grammar: llama_cpp.llama_sampler_p,
    logits: npt.NDArray[np.float32],
    candidates: Candidates,
) -> int | None:
    """A token the grammar allows, picked by the chain, which both samplers accept; None when
    the grammar allows nothing the chain would pick (e.g. it is complete and end-of-generation
    is banned): llama.cpp aborts the process if a grammar is made to accept such a token."""
    llama_cpp.llama_sampler_apply(chain, candidates.fill(logits))
    token = candidates.selected()
    if not candidates.allows(grammar, token):
        cur = candidates.fill(logits)
        llama_cpp.llama_sampler_apply(grammar, cur)
        llama_cpp.llama_sampler_apply(chain, cur)
        if candidates.selected_is_masked():
            return None
        token = candidates.selected()
    llama_cpp.llama_sampler_accept(grammar, token)
    llama_cpp.llama_sampler_accept(chain, token)
    return token


class LazyGrammar:
    """A grammar that waits for its trigger in a choice's output, as llama.cpp's lazy grammar
    does: until the trigger text appears the choice samples freely, and from its first byte on
    the grammar rules. Done here rather than in llama.cpp, which feeds the text from the trigger
    on into the grammar unchecked and aborts the process when it does not fit: see wake()."""

    def __init__(self, grammar: llama_cpp.llama_sampler_p, trigger: bytes) -> None:
        self.grammar = grammar
        self._trigger = trigger
        self._tail = b""  # the end of the output so far that could begin the trigger

    def feed(self, piece: bytes) -> bytes | None:
        """The output from the trigger on, once this token's piece completes it; else None."""
        window = self._tail + piece
        start = window.find(self._trigger)
        if start >= 0:
            return window[start:]
        keep = len(self._trigger) - 1
        self._tail = window[-keep:] if keep else b""
        return None

    def wake(self, text: bytes, vocab: Vocab, candidates: Candidates) -> bool:
        """Feeds the output from the trigger on to the grammar, each token checked before it
        is accepted; False (the grammar then unusable) when the text does not fit it."""
        try:
            tokens = vocab.tokenize(text.decode("utf-8"), False, True)
        except (UnicodeDecodeError, InvalidRequest):  # a character cut in two, or text the
            return False  # vocabulary cannot encode: no grammar starts so
        for token in tokens:
            if not candidates.allows(self.grammar, token):
                return False
            llama_cpp.llama_sampler_accept(self.grammar, token)
        return True
