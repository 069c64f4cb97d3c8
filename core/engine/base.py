"""The Engine interface the inference layer talks to; a batched engine can replace the serial one."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Protocol

from core.engine.types import GenerationEvent, GenerationRequest


class Engine(Protocol):
    """A loaded model. All methods are safe to call from the event loop: none blocks it."""

    @property
    def context_size(self) -> int: ...

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

    @property
    def memory_bytes(self) -> int: ...

    @property
    def busy(self) -> bool:
        """True while a request runs or waits."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
        """Stream chunks then one GenerationResult; closing the iterator stops the token loop."""
        ...

    def abort(self) -> None:
        """Stop every running or waiting generation at its next token; each still ends with a
        GenerationResult whose finish reason is CANCELLED."""
        ...

    async def embed(
        self, inputs: Sequence[Sequence[int]], normalize: bool
    ) -> list[list[float]]: ...

    async def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]: ...

    async def detokenize(self, token_ids: Sequence[int]) -> str: ...

    async def close(self) -> None:
        """Free the model once in-flight work is done."""
        ...
