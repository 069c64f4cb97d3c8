"""Slots: the sequences of one context, what KV each holds, and which one a new request takes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# A slot is reused for its cached prefix only when that prefix is at least this share of the
# prompt (llama-server's default slot_prompt_similarity); below it the least recently used wins.
MIN_SIMILARITY = 0.1


@dataclass(eq=False)
class Slot:
    """One llama.cpp sequence id and the tokens whose keys and values it holds, in order."""

    seq_id: int
    tokens: list[int] = field(default_factory=list)
    busy: bool = False
    # The session (client conversation) that used this slot last.
    session: str = ""
    # time.monotonic() of its last release; 0.0 for never used.
    last_used: float = 0.0


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def choose_slot(
    slots: Sequence[Slot], prompt: Sequence[int], session: str = ""
) -> Slot | None:
    """The idle slot a request should take, or None when every slot is busy.

    The slot whose cache shares the longest prefix with the prompt (above MIN_SIMILARITY;
    ties go to the request's own session, then the most recently used); else the session's
    own slot; else an empty slot; else the least recently used one.
    """
    idle = [s for s in slots if not s.busy]
    if not idle:
        return None
    scored = [(common_prefix(s.tokens, prompt), s) for s in idle]
    similar = [(n, s) for n, s in scored if n and n >= MIN_SIMILARITY * len(prompt)]
    if similar:
        return max(similar, key=lambda ns: (ns[0], _owns(ns[1], session), ns[1].last_used))[1]
    own = [s for s in idle if _owns(s, session)]
    if own:
        return own[0]
    return min(idle, key=lambda s: (bool(s.tokens), s.last_used))


def choose_extra_slots(slots: Sequence[Slot], taken: Slot, count: int) -> list[Slot]:
    """`count` more idle slots for a request's other choices: empty ones first, then LRU."""
    idle = [s for s in slots if not s.busy and s is not taken]
    return sorted(idle, key=lambda s: (bool(s.tokens), s.last_used))[:count]


def best_donor(slots: Sequence[Slot], prompt: Sequence[int], target: Slot) -> tuple[Slot, int]:
    """The other slot (busy or not) whose KV shares the longest prefix with the prompt."""
    best, best_n = target, 0
    for slot in slots:
        if slot is target:
            continue
        n = common_prefix(slot.tokens, prompt)
        if n > best_n:
            best, best_n = slot, n
    return best, best_n


def _owns(slot: Slot, session: str) -> bool:
    return bool(session) and slot.session == session
