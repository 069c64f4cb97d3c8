"""Slots: the sequences of one context, what KV each holds, and which one a new request takes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# A slot is continued only when the shared prefix is at least this share of the prompt
# (llama-server's default slot_prompt_similarity)...
MIN_SIMILARITY = 0.1
# ...and it loses no more of its cache than this (a re-tokenized last reply may differ a little).
MAX_DROPPED_TOKENS = 32
MAX_DROPPED_SHARE = 0.1
_BLOCK = 256


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
    # Idle, and its cache is too big for the host-RAM prompt cache: it stays in the KV cache.
    unparkable: bool = False


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences.

    Compares slices a block at a time (C speed) and only the differing block token by token:
    agents send prompts of thousands of tokens, checked against every slot and cache entry.
    """
    n = min(len(a), len(b))
    start = 0
    while start < n and a[start : start + _BLOCK] == b[start : start + _BLOCK]:
        start += _BLOCK
    for i in range(start, min(start + _BLOCK, n)):
        if a[i] != b[i]:
            return i
    return n


def choose_slot(
    slots: Sequence[Slot], prompt: Sequence[int], session: str = ""
) -> Slot | None:
    """The idle slot a request should take, or None when every slot is busy.

    Taking a slot destroys whatever of its cache the prompt does not continue, while any prefix
    can be copied from another slot for free (unified KV). So, in order:
    1. a slot the prompt continues (it keeps nearly all of that slot's cache, and the shared part
       is at least MIN_SIMILARITY of the prompt), never another session's: the longest wins;
    2. an empty slot;
    3. the request's own session's slot (its previous turn, edited or regenerated);
    4. the least recently used slot.
    """
    idle = [s for s in slots if not s.busy]
    if not idle:
        return None
    continued = [
        (n, s)
        for s in idle
        if not _foreign(s, session) and _continues(n := common_prefix(s.tokens, prompt), s, prompt)
    ]
    if continued:
        return max(continued, key=lambda ns: (ns[0], _owns(ns[1], session), ns[1].last_used))[1]
    empty = [s for s in idle if not s.tokens]
    if empty:
        return empty[0]
    own = [s for s in idle if _owns(s, session)]
    return own[0] if own else min(idle, key=lambda s: s.last_used)


def _continues(shared: int, slot: Slot, prompt: Sequence[int]) -> bool:
    dropped = len(slot.tokens) - shared
    return (
        shared > 0
        and shared >= MIN_SIMILARITY * len(prompt)
        and dropped <= max(MAX_DROPPED_TOKENS, MAX_DROPPED_SHARE * len(slot.tokens))
    )


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


def _foreign(slot: Slot, session: str) -> bool:
    """The slot holds another named conversation's cache."""
    return bool(session) and bool(slot.session) and slot.session != session
