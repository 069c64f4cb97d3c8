"""Top-k log-probabilities from raw logits, without sorting the whole vocabulary."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: int
    logprob: float


def top_logprobs(logits: npt.NDArray[np.float32], k: int) -> tuple[TokenLogprob, ...]:
    """The k most likely tokens and their log-softmax values, most likely first."""
    k = min(k, logits.shape[0])
    if k <= 0:
        return ()
    top = np.argpartition(logits, -k)[-k:]
    top = top[np.argsort(logits[top])[::-1]]
    peak = float(logits.max())
    log_norm = peak + float(np.log(np.exp(logits.astype(np.float64) - peak).sum()))
    return tuple(TokenLogprob(int(t), float(logits[t]) - log_norm) for t in top)
