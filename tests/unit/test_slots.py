"""Slot choice (longest cached prefix, session, LRU), donors, and the host-RAM prompt cache."""

from __future__ import annotations

import numpy as np
import pytest

from core.engine.logprobs import sampled_logprob, top_logprobs
from core.engine.prompt_cache import PromptCache
from core.engine.sampling import Sampling
from core.engine.sequence import Job
from core.engine.slots import (
    Slot,
    best_donor,
    choose_extra_slots,
    choose_slot,
    common_prefix,
)
from core.engine.step_loop import STARVED_STEPS, prefill_order
from core.engine.types import GenerationRequest


@pytest.mark.parametrize(
    ("a", "b", "n"),
    [([], [1], 0), ([1, 2, 3], [1, 2, 3], 3), ([1, 2, 3], [1, 2], 2), ([1, 2], [2, 1], 0)],
)
def test_common_prefix(a: list[int], b: list[int], n: int) -> None:
    assert common_prefix(a, b) == n


@pytest.mark.parametrize("split", [0, 1, 255, 256, 257, 511, 512, 700, 999])
def test_common_prefix_across_blocks(split: int) -> None:
    long = list(range(1000))
    assert common_prefix(long, [*long[:split], -1, *long[split + 1 :]]) == split
    assert common_prefix(long, long[:split]) == split


def slots(*contents: list[int], busy: tuple[int, ...] = ()) -> list[Slot]:
    return [
        Slot(i, list(tokens), busy=i in busy, last_used=float(i))
        for i, tokens in enumerate(contents)
    ]


def test_longest_cached_prefix_wins() -> None:
    table = slots([9, 9], [1, 2, 3], [1, 2])
    assert choose_slot(table, [1, 2, 3, 4]) is table[1]


def test_busy_slots_are_never_chosen() -> None:
    table = slots([1, 2, 3], [5], busy=(0,))
    assert choose_slot(table, [1, 2, 3, 4]) is table[1]
    assert choose_slot(slots([1], busy=(0,)), [1]) is None


def test_below_similarity_an_empty_slot_then_the_least_recently_used() -> None:
    prompt = list(range(100))
    # Slot 1 shares 5 of 100 tokens: under the 10% threshold, so it is kept for its owner.
    table = slots([7, 7], [0, 1, 2, 3, 4], [])
    assert choose_slot(table, prompt) is table[2]
    table = slots([7, 7], [0, 1, 2, 3, 4], [8])
    assert choose_slot(table, prompt) is table[0]  # last_used 0.0: least recently used


def test_session_breaks_ties_and_claims_its_slot() -> None:
    table = slots([1, 2], [1, 2], [3])
    table[0].session, table[1].session = "a", "b"
    assert choose_slot(table, [1, 2, 5], session="b") is table[1]
    # Nothing similar: the session's own slot rather than the LRU one.
    assert choose_slot(table, [8, 8, 8], session="b") is table[1]


def test_extra_slots_prefer_empty_then_lru() -> None:
    table = slots([1], [2], [], [3])
    assert choose_extra_slots(table, table[2], 2) == [table[0], table[1]]
    assert choose_extra_slots(table, table[0], 5) == [table[2], table[1], table[3]]


def test_best_donor_includes_busy_slots_and_skips_the_target() -> None:
    table = slots([1, 2, 3, 4], [1, 2], [], busy=(0,))
    donor, n = best_donor(table, [1, 2, 3, 9], table[1])
    assert (donor, n) == (table[0], 3)
    assert best_donor(table, [5], table[1])[1] == 0


def test_prompt_cache_finds_the_longest_prefix_and_evicts_lru() -> None:
    cache = PromptCache(capacity_bytes=10)
    cache.put([1, 2, 3], b"aaaa")
    cache.put([5, 6], b"bbbb")
    entry, n = cache.best([1, 2, 3, 4])
    assert entry is not None and (entry.tokens, n) == ((1, 2, 3), 3)
    cache.put([7], b"cccc")  # 12 bytes > 10: the least recently used ([5, 6]) goes
    assert cache.best([5, 6])[1] == 0
    assert cache.best([1, 2])[1] == 2 and cache.size_bytes == 8


def test_prompt_cache_keeps_no_prefix_of_another_entry() -> None:
    cache = PromptCache(capacity_bytes=100)
    cache.put([1, 2], b"x")
    cache.put([1, 2, 3], b"yy")  # supersedes [1, 2]
    assert len(cache) == 1 and cache.size_bytes == 2
    assert not cache.wants([1, 2])
    cache.put([1], b"z")  # already covered
    assert len(cache) == 1


def test_prompt_cache_refuses_oversized_or_disabled() -> None:
    assert not PromptCache(0).wants([1])
    cache = PromptCache(capacity_bytes=3)
    cache.put([1], b"toolong")
    assert len(cache) == 0


def test_top_logprobs_are_log_softmax_of_the_k_best() -> None:
    logits = np.array([0.0, 3.0, 1.0, 2.0], dtype=np.float32)
    top = top_logprobs(logits, 2)
    expected = logits - np.log(np.exp(logits.astype(np.float64)).sum())
    assert [t.token for t in top] == [1, 3]
    assert [t.logprob for t in top] == pytest.approx([expected[1], expected[3]], rel=1e-6)
    assert len(top_logprobs(logits, 10)) == 4 and top_logprobs(logits, 0) == ()


def test_a_new_conversation_takes_an_empty_slot_rather_than_destroy_another() -> None:
    # Slot 0 holds a 60-token conversation whose first 3 tokens (a template opening) the new
    # prompt shares: taking it would destroy 57 tokens; the empty slot can copy the 3.
    table = slots(list(range(60)), [])
    assert choose_slot(table, [0, 1, 2, 99, 98]) is table[1]


def test_a_continuation_may_drop_a_little_of_the_slot() -> None:
    # A re-tokenized last reply: 10 of 100 cached tokens differ.
    table = slots([*range(90), *([7] * 10)], [])
    assert choose_slot(table, [*range(90), 5, 6]) is table[0]


def test_another_sessions_slot_is_never_continued_while_another_is_free() -> None:
    table = slots([1, 2, 3], [])
    table[0].session = "a"
    assert choose_slot(table, [1, 2, 3, 4], session="b") is table[1]
    assert choose_slot(table, [1, 2, 3, 4], session="a") is table[0]
    assert choose_slot(table, [1, 2, 3, 4]) is table[0]  # no session named: it continues


def test_sampled_logprob_scores_the_token_even_outside_the_top() -> None:
    logits = np.array([0.0, 3.0, 1.0, 2.0], dtype=np.float32)
    scored = sampled_logprob(logits, 0, 2)
    norm = np.log(np.exp(logits.astype(np.float64)).sum())
    assert scored.token.token == 0
    assert scored.token.logprob == pytest.approx(-norm, rel=1e-6)
    assert [t.token for t in scored.top] == [1, 3]
    assert sampled_logprob(logits, 1, 0).top == ()


def test_prefill_order_shortest_first_unless_starved() -> None:
    def job(prompt: int, done: int, starved: int = 0) -> Job:
        request = GenerationRequest(tuple(range(prompt)), Sampling(), 1, 0.0)
        j = Job(request, emit=lambda _e: None, fail=lambda _e: None)
        j.n_past, j.starved_steps = done, starved
        return j

    long, short = job(2000, 100), job(50, 0)
    assert sorted([long, short], key=prefill_order) == [short, long]
    long.starved_steps = STARVED_STEPS
    assert sorted([long, short], key=prefill_order) == [long, short]
