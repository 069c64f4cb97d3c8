"""A loaded model's vocabulary: tokenize, detokenize, token pieces; read-only, safe from any thread."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import llama_cpp

from core.errors import InvalidRequest


class Vocab:
    """Blocking tokenizer calls on llama.cpp's vocabulary of one model."""

    def __init__(self, model: llama_cpp.llama_model_p) -> None:
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self.bos_text = self._special_text(llama_cpp.llama_vocab_bos(self._vocab))
        self.eos_text = self._special_text(llama_cpp.llama_vocab_eos(self._vocab))
        # Per-token answers the step loop asks for every token: each ctypes call releases and
        # retakes the GIL, which the event loop thread may hold; a dict lookup does not.
        self._pieces: dict[int, bytes] = {}
        self._special_pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        for _ in range(2):
            buf = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(
                self._vocab, data, len(data), buf, capacity, add_special, parse_special
            )
            if n >= 0:
                return self._known(buf[:n])
            capacity = -n
        raise InvalidRequest("the text could not be tokenized", param="text")

    def _known(self, tokens: list[int]) -> list[int]:
        """The ids, all of them tokens: a vocabulary without an unknown token (RWKV's, or a
        short WordPiece one) gives -1 for text it cannot encode, and llama.cpp would abort the
        process on that id later."""
        if tokens and (min(tokens) < 0 or max(tokens) >= self.n_vocab):  # C-speed scans
            raise InvalidRequest(
                "the model's vocabulary cannot encode part of the text (it has no unknown token)",
                param="text",
            )
        return tokens

    def piece(self, token: int, special: bool = False) -> bytes:
        """The token's bytes; a control token's text only with `special`."""
        cache = self._special_pieces if special else self._pieces
        found = cache.get(token)
        if found is None:
            found = cache[token] = self._piece(token, special)
        return found

    def _piece(self, token: int, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, -n, 0, special)
        return buf.raw[:n]

    def detokenize(self, tokens: Sequence[int]) -> str:
        arr = (llama_cpp.llama_token * max(len(tokens), 1))(*tokens)
        capacity = 8 * len(tokens) + 16
        for _ in range(2):
            buf = ctypes.create_string_buffer(capacity)
            n = llama_cpp.llama_detokenize(
                self._vocab, arr, len(tokens), buf, capacity, False, False
            )
            if n >= 0:
                return buf.raw[:n].decode("utf-8", "replace")
            capacity = -n
        raise InvalidRequest("the token ids could not be detokenized", param="token_ids")

    def grammar_sampler(self, grammar: str) -> llama_cpp.llama_sampler_p | None:
        """A grammar stage for a sampler chain, or None when the grammar does not compile."""
        sampler = llama_cpp.llama_sampler_init_grammar(
            self._vocab, grammar.encode("utf-8"), b"root"
        )
        return sampler or None

    @staticmethod
    def free_sampler(sampler: llama_cpp.llama_sampler_p) -> None:
        llama_cpp.llama_sampler_free(sampler)

    def is_eog(self, token: int) -> bool:
        found = self._eog.get(token)
        if found is None:
            found = self._eog[token] = bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))
        return found

    def _special_text(self, token: int) -> str:
        if token < 0 or token >= self.n_vocab:
            return ""
        text = llama_cpp.llama_vocab_get_text(self._vocab, token)
        return text.decode("utf-8", "replace") if text else ""
