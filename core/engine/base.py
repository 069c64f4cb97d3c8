"""The Engine interface the inference layer talks to; nothing of llama.cpp shows through it."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from core.engine.types import EngineStats, GenerationEvent, GenerationRequest


class Tokenizer(Protocol):
    """A loaded model's tokenizer; the async methods run off the event loop."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def bos_text(self) -> str: ...

    @property
    def eos_text(self) -> str: ...

    @property
    def add_bos(self) -> bool:
        """Whether text prompts get a begin-of-sequence token by default."""
        ...

    async def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]: ...

    async def detokenize(self, token_ids: Sequence[int]) -> str: ...

    async def pieces(self, token_ids: Sequence[int]) -> list[bytes]:
        """Each token's bytes."""
        ...


class Engine(Protocol):
    """A loaded model. All methods are safe to call from the event loop: none blocks it."""

    @property
    def sequence_capacity(self) -> int:
        """The most tokens (prompt + generated) one sequence may hold."""
        ...

    @property
    def embed_capacity(self) -> int:
        """The most tokens one embedding input may have."""
        ...

    @property
    def kv_capacity(self) -> int:
        """Tokens the KV cache holds across all sequences (n choices share their prompt)."""
        ...

    @property
    def slots(self) -> int:
        """Sequences generated at once; a request with n choices takes n of them."""
        ...

    @property
    def threads(self) -> int:
        """CPU threads the model computes with now."""
        ...

    def set_threads(self, n: int) -> None:
        """Compute with `n` CPU threads (clamped to 1..the configured count) from the next step
        on, for every request; the engine's own threads apply it between steps."""
        ...

    def reserve(self) -> AbstractContextManager[None]:
        """Holds one of the model's places (running plus waiting) for a generation request from
        before its prompt is prepared until it ends; Overloaded at once when none is left, so
        an overloaded model refuses before rendering templates and tokenizing, not after."""
        ...

    @property
    def tokenizer(self) -> Tokenizer: ...

    @property
    def memory_bytes(self) -> int: ...

    @property
    def busy(self) -> bool:
        """True while a request runs or waits."""
        ...

    def stats(self) -> EngineStats:
        """Counters for metrics."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        """Stream chunks then one GenerationResult; closing the iterator stops the generation
        within one step (Overloaded at once when the queue is full)."""
        ...

    def abort(self) -> None:
        """Stop every running or waiting generation at its next step; each still ends with a
        GenerationResult whose finish reason is CANCELLED."""
        ...

    async def embed(
        self, inputs: Sequence[Sequence[int]], normalize: bool
    ) -> list[list[float]]: ...

    async def close(self) -> None:
        """Free the model once in-flight work is done."""
        ...
