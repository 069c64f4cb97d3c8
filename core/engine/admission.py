"""Admission into slots: which slots a request takes and what of their KV cache it keeps."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from core.engine.batch_context import BatchContext
from core.engine.prompt_cache import PromptCache
from core.engine.sequence import Job
from core.engine.slots import Slot, best_donor, choose_extra_slots, choose_slot, common_prefix

log = logging.getLogger(__name__)

# A slot's cache is saved to host RAM before being overwritten when at least this much would go.
MIN_SAVE_TOKENS = 32


class SlotTable:
    """The slots of one BatchContext, with the host-RAM cache behind them; step thread only."""

    def __init__(self, ctx: BatchContext, n_slots: int, cache: PromptCache) -> None:
        self._ctx = ctx
        self.slots = [Slot(i) for i in range(n_slots)]
        self.cache = cache
        self.hit_tokens = 0  # prompt tokens served from cache, for metrics

    @property
    def idle(self) -> int:
        return sum(not s.busy for s in self.slots)

    def place(self, job: Job) -> bool:
        """Give the job n idle slots and its best cached prefix; False if too few are idle."""
        primary = choose_slot(self.slots, job.prompt, job.request.session)
        if primary is None:
            return False
        extra = choose_extra_slots(self.slots, primary, job.request.n - 1)
        if len(extra) < job.request.n - 1:
            return False
        for slot in extra:
            self._empty(slot)
        reused = self._reuse(primary, job.prompt)
        job.n_past = reused
        if not job.requeued:  # back from the queue, it finds what it evaluated itself
            job.cached = reused
            self.hit_tokens += reused
        job.slots = [primary, *extra]
        for slot in job.slots:
            slot.busy = True
        self.park_all()  # before its first step: the same KV layout for the same requests
        return True

    def _reuse(self, slot: Slot, prompt: tuple[int, ...]) -> int:
        """Fill `slot` with the longest available prefix of the prompt; returns its length.

        At least the last prompt token is always evaluated again, for its logits.
        """
        limit = len(prompt) - 1
        own = min(common_prefix(slot.tokens, prompt), limit)
        donor, shared = best_donor(self.slots, prompt, slot)
        shared = min(shared, limit)
        if not self._ctx.partial_copies and shared < len(donor.tokens):
            shared = 0  # recurrent state: only a whole sequence can be copied
        entry, saved = self.cache.best(prompt)
        saved = min(saved, limit)
        if own >= shared and own >= saved:
            held = len(slot.tokens)
            self._truncate(slot, own)
            return self._whole_window(slot, len(slot.tokens), held)
        self._empty(slot, keep_hint=prompt)
        if shared >= saved:
            self._ctx.seq_cp(donor.seq_id, slot.seq_id, 0, shared)
            slot.tokens = list(prompt[:shared])
            return self._whole_window(slot, shared, len(donor.tokens))
        if entry is not None and self._restore(slot, entry.state):
            slot.tokens = list(entry.tokens)
            self._truncate(slot, saved)
            return self._whole_window(slot, len(slot.tokens), len(entry.tokens))
        return 0

    def _restore(self, slot: Slot, state: bytes) -> bool:
        """Load a saved prefix; when idle slots' caches fill the KV, move them out first."""
        if self._ctx.restore_seq(slot.seq_id, state):
            return True
        if not self.free_idle(keep=slot):
            return False
        return self._ctx.restore_seq(slot.seq_id, state)

    def _whole_window(self, slot: Slot, keep: int, held: int) -> int:
        """Sliding-window layers drop positions older than n_swa: a prefix cut from a longer
        sequence (`held` tokens) may have lost its window, and is then evaluated again. A whole
        sequence still holds the window it needs to continue (llama-server checks the same)."""
        if not keep or keep >= held or self._ctx.n_swa <= 0:
            return keep
        pos_min = self._ctx.pos_min(slot.seq_id)
        if 0 <= pos_min <= max(0, keep - self._ctx.n_swa):
            return keep
        log.debug("slot %d: sliding window incomplete, prompt evaluated again", slot.seq_id)
        self._ctx.seq_rm(slot.seq_id, 0, -1)
        slot.tokens = []
        return 0

    def _truncate(self, slot: Slot, keep: int) -> None:
        if keep < len(slot.tokens):
            self._save(slot, keep)
            if not self._ctx.seq_rm(slot.seq_id, keep, -1):
                self._ctx.seq_rm(slot.seq_id, 0, -1)
                keep = 0
            del slot.tokens[keep:]

    def _empty(self, slot: Slot, keep_hint: tuple[int, ...] = (), size: int | None = None) -> None:
        """Drop the slot's cache (saving it first); `size`: its state size, when known."""
        if slot.tokens:
            self._save(slot, common_prefix(slot.tokens, keep_hint), size)
            self._ctx.seq_rm(slot.seq_id, 0, -1)
            slot.tokens = []

    def _save(self, slot: Slot, keep: int, size: int | None = None) -> None:
        """Copy the slot's KV to host RAM when much of it is about to be dropped."""
        if len(slot.tokens) - keep < MIN_SAVE_TOKENS or not self.cache.wants(slot.tokens):
            return
        # Sizing walks the whole state as writing it does (slow once concurrent decodes have
        # interleaved the sequences' cells): once per save.
        size = self._ctx.state_size(slot.seq_id) if size is None else size
        if size > self.cache.capacity_bytes:
            return  # would be refused: don't copy it first
        try:
            state = self._ctx.save_seq(slot.seq_id, size)
        except Exception:  # the cache only saves time: the request goes on without it
            log.exception("saving slot %d to the prompt cache failed", slot.seq_id)
            return
        self.cache.put(slot.tokens, state)
        log.debug("saved %d tokens of slot %d to the prompt cache", len(slot.tokens), slot.seq_id)

    def fork(self, job: Job) -> None:
        """After the prompt: every other choice's slot shares the primary slot's KV."""
        primary = job.slots[0]
        for slot in job.slots[1:]:
            self._ctx.seq_cp(primary.seq_id, slot.seq_id, 0, -1)
            slot.tokens = list(primary.tokens)

    def release(self, job: Job) -> None:
        now = time.monotonic()
        for slot in job.slots:
            slot.busy = False
            slot.unparkable = False
            slot.session = job.request.session
            slot.last_used = now

    def park_one(self) -> bool:
        """Move the least recently used idle slot's cache to host RAM, when it can hold it;
        False when there is none to move.

        Idle caches pin cells across the unified KV pool, and attention scans up to the highest
        cell in use for every query, prompt and generated token alike: measured here, a cold
        650-token prompt took 30% longer beside them, and one stream's tokens came 20% slower
        beside seven finished 110-token requests. Saving 110 tokens takes 2 ms, 20 ms when
        concurrent decodes interleaved their cells, so the step loop moves them one at a time:
        while it has nothing else to do, and one per step of those that go idle while others
        run; admission moves whatever is left before a request's first step (so that requests
        made one after another meet the same KV layout, and a seed gives the same text). A
        returning conversation restores its cache from host RAM.
        """
        for slot in self._parkable():
            try:
                size = self._ctx.state_size(slot.seq_id)
                if self.cache.size_bytes + size <= self.cache.capacity_bytes:
                    self._empty(slot, size=size)
                    return True
            except Exception:  # it only saves time: never a request's failure
                log.exception("moving slot %d to host RAM failed", slot.seq_id)
            # Only into free room: pushing out saved prefixes would lose caches that the KV
            # pool holds well enough. It stays there until it serves again.
            slot.unparkable = True
        return False

    def park_all(self) -> None:
        while self.park_one():
            pass

    def has_parkable(self) -> bool:
        return next(self._parkable(), None) is not None

    def _parkable(self) -> Iterator[Slot]:
        """Idle slots whose caches may move to host RAM, least recently used first."""
        if self.cache.capacity_bytes <= 0:
            return
        for slot in sorted(self.slots, key=lambda s: s.last_used):
            if not slot.busy and slot.tokens and not slot.unparkable:
                yield slot

    def free_idle(self, keep: Slot | None = None) -> bool:
        """Empty every idle slot's cache (saving it to host RAM first); True if any held tokens."""
        freed = False
        for slot in self.slots:
            if not slot.busy and slot.tokens and slot is not keep:
                self._empty(slot)
                freed = True
        return freed

    def reset(self) -> None:
        """After an unexpected failure: forget every slot's KV."""
        for slot in self.slots:
            self._ctx.seq_rm(slot.seq_id, 0, -1)
            slot.tokens = []
            slot.busy = False
