"""The async tokenizer a loaded model exposes: vocabulary calls on their own bounded thread."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from core.engine.scheduler import SerialScheduler
from core.engine.vocab import Vocab


class Tokenizer:
    """Tokenizer calls never wait behind a generation; the vocabulary is read-only."""

    def __init__(self, vocab: Vocab, scheduler: SerialScheduler) -> None:
        self._vocab = vocab
        self._scheduler = scheduler

    @property
    def vocab_size(self) -> int:
        return self._vocab.n_vocab

    @property
    def bos_text(self) -> str:
        return self._vocab.bos_text

    @property
    def eos_text(self) -> str:
        return self._vocab.eos_text

    @property
    def add_bos(self) -> bool:
        """Whether text prompts get a begin-of-sequence token by default."""
        return self._vocab.add_bos

    async def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        result: list[int] = await self._run(
            lambda: self._vocab.tokenize(text, add_special, parse_special)
        )
        return result

    async def pieces(self, token_ids: Sequence[int]) -> list[bytes]:
        result: list[bytes] = await self._run(lambda: [self._vocab.piece(t) for t in token_ids])
        return result

    async def detokenize(self, token_ids: Sequence[int]) -> str:
        result: str = await self._run(lambda: self._vocab.detokenize(token_ids))
        return result

    async def _run(self, fn: Any) -> Any:
        # The job keeps its place until it really ends, even if this await is cancelled.
        return await asyncio.wrap_future(self._scheduler.submit(fn))
