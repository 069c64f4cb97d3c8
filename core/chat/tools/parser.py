"""Splits one choice's generated text into its content and its tool calls, as the text streams.

Content goes out as soon as it cannot be the start of a call (text that might be the syntax's
opener is held back, as stop strings are); a call goes out as a first piece with its id and
name, then pieces of its arguments. The same parser reads a whole answer at once, so streamed
and whole responses agree.
"""

from __future__ import annotations

import enum
import secrets
import string
from collections.abc import Callable

from core.chat.tools.json_calls import Found, Item, JsonCalls
from core.chat.tools.syntax import SPECS, ToolSyntax
from core.chat.types import ToolCallDelta

_SPACE = " \t\r\n"
_ALNUM = string.ascii_letters + string.digits


class _Mode(enum.Enum):
    CONTENT = "content"  # looking for the opener
    CALLS = "calls"  # reading the calls' JSON
    CLOSING = "closing"  # after the JSON, expecting the closer
    TEXT = "text"  # only content from here on (calls were only allowed at the start)


def openai_call_id() -> str:
    return "call_" + "".join(secrets.choice(_ALNUM) for _ in range(24))


def mistral_call_id() -> str:
    # Mistral's templates refuse any other shape of id in the history.
    return "".join(secrets.choice(_ALNUM) for _ in range(9))


class ToolCallParser:
    """One choice's parser; feed() its text pieces in order, then finish()."""

    def __init__(
        self,
        syntax: ToolSyntax,
        new_id: Callable[[], str] | None = None,
        names: frozenset[str] | None = None,
    ) -> None:
        """`names`: the tools offered; a "call" to any other is text (e.g. a JSON answer that
        happens to start like a Llama 3 call). None: any name."""
        self._spec = SPECS[syntax]
        self._names = names
        self._new_id = new_id or (
            mistral_call_id if syntax is ToolSyntax.MISTRAL else openai_call_id
        )
        self._mode = _Mode.CONTENT
        self._held = ""
        self._reader: JsonCalls | None = None
        self._numbers: dict[int, int] = {}  # the reader's call number -> call index
        self._trim = False  # drop the spaces between calls and what follows
        self._region_calls = 0  # calls named in the current region
        self.calls = 0  # calls started (named)
        self.closed = 0  # calls whose JSON object closed

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        """Content text and call pieces for the next piece of generated text."""
        content: list[str] = []
        deltas: list[ToolCallDelta] = []
        buf, self._held = self._held + text, ""
        while buf:
            buf = self._advance(buf, content, deltas)
        return "".join(content), _merged(deltas)

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        """The end of the answer: held-back text is content; an unfinished call stays so."""
        deltas: list[ToolCallDelta] = []
        content = ""
        if self._mode is _Mode.CALLS and not self._region_calls:
            content = ""  # calls cut short before one was named: dropped, as any cut call
        elif self._mode is _Mode.CALLS and self._reader is not None:
            content = self._take(self._reader.finish(), deltas)
        elif (self._mode is _Mode.CONTENT and self._spec.anywhere) or (self._mode is _Mode.CONTENT and not self._held.strip(_SPACE)):
            content = self._held
        # else: the start of a call or closer cut short, dropped like the rest of such a call
        self._held = ""
        return content, _merged(deltas)

    def _advance(self, buf: str, content: list[str], deltas: list[ToolCallDelta]) -> str:
        """Handles some of buf in the current mode; returns what is left for the next mode."""
        if self._trim:
            buf = buf.lstrip(_SPACE)
            self._trim = not buf
        if self._mode is _Mode.CALLS:
            return self._read_calls(buf, content, deltas)
        if self._mode is _Mode.CLOSING:
            return self._closing(buf)
        if self._mode is _Mode.TEXT:
            content.append(buf)
            return ""
        return (
            self._find_opener(buf, content) if self._spec.anywhere else self._opening(buf, content)
        )

    def _opening(self, buf: str, content: list[str]) -> str:
        """Syntaxes whose calls can only start the answer: decide on its first characters."""
        opener, start = self._spec.opener, buf.lstrip(_SPACE)
        if start.startswith(opener):
            return self._start_calls(start[len(opener) :])
        if opener.startswith(start):  # too early to tell (spaces only, or part of the opener)
            self._held = buf
            return ""
        self._mode = _Mode.TEXT
        content.append(buf)
        return ""

    def _find_opener(self, buf: str, content: list[str]) -> str:
        opener = self._spec.opener
        at = buf.find(opener)
        if at >= 0:
            content.append(buf[:at])
            return self._start_calls(buf[at + len(opener) :])
        keep = _partial_start(buf, opener)
        content.append(buf[:keep])
        self._held = buf[keep:]
        return ""

    @property
    def all_closed(self) -> bool:
        """Every call the answer started is whole (none was cut by max_tokens or a stop)."""
        return self.calls == self.closed and self._mode is not _Mode.CALLS

    def _start_calls(self, rest: str) -> str:
        self._mode = _Mode.CALLS
        self._reader = JsonCalls(self._spec.call_depth, self._spec.arguments_key)
        self._numbers = {}
        self._region_calls = 0
        if self._spec.opener_is_json:
            self._reader.feed(self._spec.opener)
        return rest

    def _read_calls(self, buf: str, content: list[str], deltas: list[ToolCallDelta]) -> str:
        assert self._reader is not None
        items, rest = self._reader.feed(buf)
        unknown = {i.call for i in items if i.kind is Found.NAME and not self._offered(i.text)}
        if unknown and not self._region_calls:
            return self._not_calls(rest, content)
        unread = self._take([i for i in items if i.call not in unknown], deltas)
        if not self._region_calls:  # no call yet: the text goes out whole once the JSON ends
            if self._reader.done:
                content.append(self._marker(self._spec.opener) + self._reader.text)
        else:
            content.append(unread)
        if self._reader.done:
            self._trim = bool(self._region_calls)
            self._mode = (
                _Mode.CLOSING
                if self._spec.closer
                else (_Mode.CONTENT if self._spec.anywhere else _Mode.TEXT)
            )
        return rest

    def _offered(self, name: str) -> bool:
        return self._names is None or name in self._names

    def _not_calls(self, rest: str, content: list[str]) -> str:
        """What looked like calls names no offered tool: all of it is text."""
        assert self._reader is not None
        content.append(self._marker(self._spec.opener) + self._reader.text)
        self._mode = _Mode.CONTENT if self._spec.anywhere else _Mode.TEXT
        return rest

    def _marker(self, text: str) -> str:
        """A marker as text (an opener that is JSON is already in the reader's text)."""
        return "" if self._spec.opener_is_json and text == self._spec.opener else text

    def _closing(self, buf: str) -> str:
        closer = self._spec.closer
        if buf.startswith(closer):
            self._mode = _Mode.CONTENT
            if not self._region_calls:  # it closed no call: the closer is text too
                self._trim = False
                return buf
            self._trim = True
            return buf[len(closer) :]
        if closer.startswith(buf):
            self._held = buf
            return ""
        self._mode = _Mode.CONTENT  # no closer after all: carry on reading
        return buf

    def _take(self, items: list[Item], deltas: list[ToolCallDelta]) -> str:
        """Reader items as call pieces; returns the text that was no call."""
        unread = []
        for item in items:
            if item.kind is Found.UNREAD:
                unread.append(item.text)
            elif item.kind is Found.NAME:
                self._numbers[item.call] = self.calls
                deltas.append(ToolCallDelta(self.calls, id=self._new_id(), name=item.text))
                self.calls += 1
                self._region_calls += 1
            elif item.kind is Found.END:
                self.closed += 1
            else:
                deltas.append(ToolCallDelta(self._numbers[item.call], arguments=item.text))
        return "".join(unread)


def _partial_start(buf: str, opener: str) -> int:
    """Where the longest suffix of buf that could begin the opener starts (len(buf): none)."""
    for start in range(max(0, len(buf) - len(opener) + 1), len(buf)):
        if opener.startswith(buf[start:]):
            return start
    return len(buf)


def _merged(deltas: list[ToolCallDelta]) -> list[ToolCallDelta]:
    """Consecutive pieces of one call as one piece."""
    merged: list[ToolCallDelta] = []
    for delta in deltas:
        last = merged[-1] if merged else None
        if last is not None and last.call_index == delta.call_index and not delta.id:
            merged[-1] = ToolCallDelta(
                last.call_index, last.id, last.name, last.arguments + delta.arguments
            )
        else:
            merged.append(delta)
    return merged
