"""Log-probabilities of sampled tokens and their top rivals, from raw logits without a full sort."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: int
    logprob: float
    piece: bytes = b""


@dataclass(frozen=True, slots=True)
class SampledLogprob:
    """A generated token's log-probability and the most likely tokens at its position."""

    token: TokenLogprob
    top: tuple[TokenLogprob, ...] = ()


# Logits this far below the best hold under e**-16 of its probability: the top k are nearly
# always among them, a handful of tokens instead of the whole vocabulary to partition.
_CANDIDATE_SPAN = 16.0


def log_softmax_norm(logits: npt.NDArray[np.float32]) -> float:
    """log(sum(exp(logits))), computed stably (float32 exponentials, float64 sum)."""
    peak = logits.max()
    return float(peak) + float(np.log(np.exp(logits - peak).sum(dtype=np.float64)))


def _top_indices(logits: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.intp]:
    candidates = np.flatnonzero(logits >= logits.max() - _CANDIDATE_SPAN)
    if candidates.size < k:  # fewer than k near the top: everything from the k-th value up
        kth = np.partition(logits, -k)[-k]
        candidates = np.flatnonzero(logits >= kth)
    # Most likely first; equal logits by token id, whichever way they were found.
    order = np.lexsort((candidates, -logits[candidates]))
    return candidates[order[:k]]


def top_logprobs(
    logits: npt.NDArray[np.float32], k: int, norm: float | None = None
) -> tuple[TokenLogprob, ...]:
    """The k most likely tokens and their log-softmax values, most likely first."""
    k = min(k, logits.shape[0])
    if k <= 0:
        return ()
    norm = log_softmax_norm(logits) if norm is None else norm
    return tuple(TokenLogprob(int(t), float(logits[t]) - norm) for t in _top_indices(logits, k))


def sampled_logprob(logits: npt.NDArray[np.float32], token: int, k: int) -> SampledLogprob:
    """The sampled token's log-probability under the raw logits, and the top k at its position."""
    norm = log_softmax_norm(logits)
    return SampledLogprob(
        TokenLogprob(token, float(logits[token]) - norm), top_logprobs(logits, k, norm)
    )
