"""Sampling settings with their defaults, and the per-request checks that need the loaded model."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from core.errors import InvalidRequest

# llama.cpp's LLAMA_DEFAULT_SEED: a seed value that means "random" rather than itself.
RANDOM_SEED_SENTINEL = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Sampling:
    """Resolved sampling settings; the defaults are those documented in inference.proto."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    # None: a fresh random seed per request.
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # None: until end of generation, a stop string, or a full context.
    max_tokens: int | None = None
    # Not hashable, unlike the rest: token id -> value added to its logit.
    logit_bias: dict[int, float] = field(default_factory=dict)
    # Completions from the one prompt.
    n: int = 1
    # Report each generated token's log-probability, and this many top alternatives.
    logprobs: bool = False
    top_logprobs: int = 0
    # Structured output, at most one: GBNF text, or a JSON Schema as JSON text.
    grammar: str = ""
    json_schema: str = ""
    # The request field a failing grammar is blamed on: the server builds one from the tools.
    grammar_param: str = "sampling.grammar"
    # With a grammar, the text whose first appearance in a choice's output starts it (llama.cpp's
    # lazy grammar: tool calls after free text); "" applies it from the first token.
    grammar_trigger: str = ""

    @property
    def greedy(self) -> bool:
        """Temperature 0: always take the most likely token."""
        return self.temperature == 0.0

    def seed_for(self, choice: int) -> int | None:
        """Choice i's seed: seed + i (skipping the random-seed sentinel), or None for random."""
        if self.seed is None:
            return None
        seed = (self.seed + choice) % (RANDOM_SEED_SENTINEL + 1)
        return seed - 1 if seed == RANDOM_SEED_SENTINEL else seed


def check_token_ids(ids: Iterable[int], vocab_size: int, param: str) -> None:
    """InvalidRequest naming the first id outside [0, vocab_size)."""
    for token_id in ids:
        if not 0 <= token_id < vocab_size:
            raise InvalidRequest(
                f"token id {token_id} is outside the vocabulary (0..{vocab_size - 1})", param=param
            )


def resolve_max_tokens(
    prompt_tokens: int, max_tokens: int | None, context_size: int, *, prompt_param: str = "prompt"
) -> int:
    """How many tokens may be generated: max_tokens clamped to the room left in the context.

    Like llama-server and Ollama, a max_tokens past the context is not an error (coding agents
    send 32000 by default): generation stops there with finish reason length.
    """
    if prompt_tokens >= context_size:
        raise InvalidRequest(
            f"prompt has {prompt_tokens} tokens but the context holds {context_size}",
            param=prompt_param,
        )
    room = context_size - prompt_tokens
    if max_tokens is None:
        return room
    if max_tokens < 1:
        raise InvalidRequest(
            f"sampling.max_tokens must be >= 1, got {max_tokens}", param="sampling.max_tokens"
        )
    return min(max_tokens, room)
