"""Log-probabilities from raw logits: the top k and the normaliser against a brute-force answer."""

from __future__ import annotations

import numpy as np
import pytest

from core.engine.logprobs import log_softmax_norm, sampled_logprob, top_logprobs


def _brute(logits: np.ndarray, k: int) -> list[tuple[int, float]]:
    lp = logits.astype(np.float64) - np.log(np.exp(logits.astype(np.float64)).sum())
    order = sorted(range(len(logits)), key=lambda t: (-logits[t], t))[:k]
    return [(t, lp[t]) for t in order]


@pytest.mark.parametrize("scale", [0.0, 0.5, 5.0, 40.0])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_top_logprobs_match_a_full_sort(scale: float, k: int) -> None:
    rng = np.random.default_rng(int(scale * 10) + k)
    logits = (rng.standard_normal(4096) * scale).astype(np.float32)
    got = [(t.token, t.logprob) for t in top_logprobs(logits, k)]
    want = _brute(logits, k)
    assert [t for t, _ in got] == [t for t, _ in want]
    assert np.allclose([lp for _, lp in got], [lp for _, lp in want], atol=1e-4)


def test_a_peaked_distribution_and_ties() -> None:
    logits = np.full(1000, -50.0, dtype=np.float32)
    logits[[7, 3, 900]] = [10.0, 10.0, 9.0]
    got = top_logprobs(logits, 4)
    assert [t.token for t in got] == [3, 7, 900, 0]  # ties by token id
    assert log_softmax_norm(logits) == pytest.approx(np.log(2 * np.exp(10) + np.exp(9)), rel=1e-6)
    scored = sampled_logprob(logits, 900, 2)
    assert scored.token.logprob == pytest.approx(9.0 - log_softmax_norm(logits))
    assert [t.token for t in scored.top] == [3, 7]
