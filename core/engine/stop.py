"""Incremental stop-string matching over streamed text, holding back possible stop prefixes."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StopResult:
    """What one feed() produced: text safe to send now, and the stop string if one matched."""

    emit: str
    matched: str | None = None


class StopMatcher:
    """Finds the first stop string in text that arrives in pieces.

    "First" is the occurrence that is complete earliest (ties: the one starting earliest),
    which is what a character-by-character stream would see, so the result does not depend
    on how the text was split into chunks. Only held-back text plus the new chunk is
    searched: no match can lie wholly in text already emitted.
    """

    def __init__(self, stops: Iterable[str]) -> None:
        self._stops = tuple(dict.fromkeys(stops))
        if any(not s for s in self._stops):
            raise ValueError("stop strings must not be empty")
        self._max_len = max((len(s) for s in self._stops), default=0)
        first_chars = "".join(sorted({s[0] for s in self._stops}))
        # Only a position holding some stop string's first character can start a held suffix.
        self._first = re.compile(f"[{re.escape(first_chars)}]" if first_chars else "(?!)")
        self._held = ""
        self._matched: str | None = None

    @property
    def matched(self) -> str | None:
        """The stop string that matched, once one has."""
        return self._matched

    def feed(self, text: str) -> StopResult:
        """Add generated text; return what may be emitted and whether a stop string matched."""
        if self._matched is not None:
            return StopResult("", self._matched)
        if not self._stops:
            return StopResult(text)
        buf = self._held + text
        found = self._earliest_match(buf)
        if found is not None:
            start, stop = found
            self._matched, self._held = stop, ""
            return StopResult(buf[:start], stop)
        keep = self._held_start(buf)
        self._held = buf[keep:]
        return StopResult(buf[:keep])

    def flush(self) -> str:
        """At the end of generation without a match: release the held-back text."""
        held, self._held = self._held, ""
        return held

    def _earliest_match(self, buf: str) -> tuple[int, str] | None:
        best: tuple[int, int, str] | None = None
        for stop in self._stops:
            start = buf.find(stop)
            if start < 0:
                continue
            key = (start + len(stop), start, stop)
            if best is None or key[:2] < best[:2]:
                best = key
        return None if best is None else (best[1], best[2])

    def _held_start(self, buf: str) -> int:
        """Index where the longest suffix of buf that begins some stop string starts."""
        window = max(0, len(buf) - self._max_len + 1)
        for hit in self._first.finditer(buf, window):
            tail = buf[hit.start() :]
            if any(s.startswith(tail) for s in self._stops):
                return hit.start()
        return len(buf)
