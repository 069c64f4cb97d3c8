"""C-side sampler chains built from Sampling settings, one per sequence."""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator, Sequence

import llama_cpp

from core.engine.sampling import Sampling

# Tokens of history the repeat penalty looks at (llama.cpp's default penalty_last_n).
PENALTY_LAST_N = 64


def new_chain(
    n_vocab: int,
    sampling: Sampling,
    seed: int | None,
    history: Sequence[int],
    generated_max: int,
) -> llama_cpp.llama_sampler_p:
    """A sampler chain for one sequence; the caller frees it with llama_sampler_free.

    The repeat penalty sees the end of the prompt (`history`), as in llama.cpp; presence and
    frequency penalties count every generated token (`generated_max` of them at most) and no
    prompt token, as OpenAI defines them, so they live in a separate, unprimed stage.
    """
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    try:
        # Each stage is owned by the chain as soon as it is made: an error frees what exists.
        for stage in _stages(n_vocab, sampling, seed, history, generated_max):
            llama_cpp.llama_sampler_chain_add(chain, stage)
    except BaseException:
        llama_cpp.llama_sampler_free(chain)
        raise
    return chain


def plain_greedy(s: Sampling) -> bool:
    """Whether the chain is the greedy stage alone: then the argmax of the logits is its pick
    (the first of equal maxima, as llama.cpp's greedy sampler), without building candidates."""
    return (
        s.temperature <= 0.0
        and not s.logit_bias
        and s.repeat_penalty == 1.0
        and (s.frequency_penalty, s.presence_penalty) == (0.0, 0.0)
    )


def _stages(
    n_vocab: int, s: Sampling, seed: int | None, history: Sequence[int], generated_max: int
) -> Iterator[llama_cpp.llama_sampler_p]:
    if s.logit_bias:
        yield _logit_bias(n_vocab, s.logit_bias)
    if s.repeat_penalty != 1.0:
        repeat = llama_cpp.llama_sampler_init_penalties(
            n_vocab, PENALTY_LAST_N, s.repeat_penalty, 0.0, 0.0
        )
        for token in history[-PENALTY_LAST_N:]:
            llama_cpp.llama_sampler_accept(repeat, token)
        yield repeat
    if (s.frequency_penalty, s.presence_penalty) != (0.0, 0.0):
        yield llama_cpp.llama_sampler_init_penalties(
            n_vocab, max(generated_max, 1), 1.0, s.frequency_penalty, s.presence_penalty
        )
    if s.temperature <= 0.0:
        yield llama_cpp.llama_sampler_init_greedy()
        return
    if s.top_k > 0:
        yield llama_cpp.llama_sampler_init_top_k(s.top_k)
    yield llama_cpp.llama_sampler_init_top_p(s.top_p, 1)
    yield llama_cpp.llama_sampler_init_min_p(s.min_p, 1)
    yield llama_cpp.llama_sampler_init_temp(s.temperature)
    yield llama_cpp.llama_sampler_init_dist(seed if seed is not None else secrets.randbits(32))


def _logit_bias(n_vocab: int, bias: dict[int, float]) -> llama_cpp.llama_sampler_p:
    items = [
        llama_cpp.llama_logit_bias(token=t, bias=-math.inf if b <= -100 else b)
        for t, b in bias.items()
    ]
    arr = (llama_cpp.llama_logit_bias * len(items))(*items)
    return llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(items), arr)
