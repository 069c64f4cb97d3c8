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


def log_softmax_norm(logits: npt.NDArray[np.float32]) -> float:
    """log(sum(exp(logits))), computed stably."""
    peak = float(logits.max())
    return peak + float(np.log(np.exp(logits.astype(np.float64) - peak).sum()))


def top_logprobs(logits: npt.NDArray[np.float32], k: int) -> tuple[TokenLogprob, ...]:
    """The k most likely tokens and their log-softmax values, most likely first."""
    k = min(k, logits.shape[0])
    if k <= 0:
        return ()
    top = np.argpartition(logits, -k)[-k:]
    top = top[np.argsort(logits[top])[::-1]]
    norm = log_softmax_norm(logits)
    return tuple(TokenLogprob(int(t), float(logits[t]) - norm) for t in top)


def sampled_logprob(logits: npt.NDArray[np.float32], token: int, k: int) -> SampledLogprob:
    """The sampled token's log-probability under the raw logits, and the top k at its position."""
    norm = log_softmax_norm(logits)
    return SampledLogprob(TokenLogprob(token, float(logits[token]) - norm), top_logprobs(logits, k))
