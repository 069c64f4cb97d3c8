"""Host-RAM prompt cache: KV states of evicted slots, so a returning conversation stays warm."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from core.engine.slots import common_prefix


@dataclass(frozen=True, slots=True)
class CachedPrompt:
    """A sequence's saved KV state and the tokens it holds."""

    tokens: tuple[int, ...]
    state: bytes


class PromptCache:
    """Least recently used entries under a byte budget; no entry is a prefix of another."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._entries: OrderedDict[tuple[int, ...], CachedPrompt] = OrderedDict()
        self.size_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def wants(self, tokens: Sequence[int]) -> bool:
        """False when saving these tokens would add nothing (an entry already covers them)."""
        if self.capacity_bytes <= 0:
            return False
        return not any(_starts_with(key, tokens) for key in self._entries)

    def put(self, tokens: Sequence[int], state: bytes) -> None:
        key = tuple(tokens)
        if len(state) > self.capacity_bytes or not self.wants(key):
            return
        for old in [k for k in self._entries if _starts_with(key, k)]:
            self._drop(old)  # a longer state of the same conversation supersedes it
        self._entries[key] = CachedPrompt(key, state)
        self.size_bytes += len(state)
        while self.size_bytes > self.capacity_bytes:
            self._drop(next(iter(self._entries)))

    def best(self, prompt: Sequence[int]) -> tuple[CachedPrompt | None, int]:
        """The entry sharing the longest prefix with the prompt, and that length."""
        best, best_n = None, 0
        for entry in self._entries.values():
            n = common_prefix(entry.tokens, prompt)
            if n > best_n:
                best, best_n = entry, n
        if best is not None:
            self._entries.move_to_end(best.tokens)
        return best, best_n

    def _drop(self, key: tuple[int, ...]) -> None:
        self.size_bytes -= len(self._entries.pop(key).state)


def _starts_with(tokens: Sequence[int], prefix: Sequence[int]) -> bool:
    return len(prefix) <= len(tokens) and common_prefix(tokens, prefix) == len(prefix)
