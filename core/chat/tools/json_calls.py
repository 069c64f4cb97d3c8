"""Reads tool calls out of JSON text as it streams in, a character at a time.

A call is an object at a given container depth (counting itself) with a "name" string and its
arguments under a known key. The reader reports a call's name once the name is complete, then
its arguments' raw text as it grows, so a client sees arguments stream; arguments written as a
JSON string (some models do) are decoded once complete. Malformed text never raises: a call
object without a name is handed back as unread text.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

_SPACE = " \t\r\n"


class Found(enum.Enum):
    NAME = "name"  # a call's name is known: the call starts
    ARGUMENTS = "arguments"  # more of a call's arguments text
    END = "end"  # a named call's object closed: the call is whole
    UNREAD = "unread"  # text that is no call after all


@dataclass(frozen=True, slots=True)
class Item:
    kind: Found
    call: int  # the call's number within this value
    text: str


@dataclass
class _Call:
    number: int
    start: int  # index of the call object's "{" in the text
    name: str | None = None
    announced: bool = False
    key: str | None = None  # the key whose value is being read
    value_start: int | None = None
    arguments_start: int | None = None
    arguments_end: int | None = None
    sent: int = 0  # characters of the arguments text already reported


class JsonCalls:
    """Follows one JSON value (a region of calls) and reports the calls in it."""

    def __init__(self, call_depth: int, arguments_key: str) -> None:
        self._depth = call_depth
        self._arguments_keys = frozenset({arguments_key, "arguments", "parameters"})
        self._text: list[str] = []
        self._stack: list[str] = []
        self._in_string = False
        self._escape = False
        self._string_start = 0
        self._expect_key = False
        self._call: _Call | None = None
        self.calls = 0  # call objects opened so far
        self.done = False  # the value has closed (or never opened)

    def feed(self, text: str) -> tuple[list[Item], str]:
        """Reads text up to the end of the value; returns what it found and the text after."""
        items: list[Item] = []
        for offset, char in enumerate(text):
            if not self._stack and char not in "{[":
                if char in _SPACE and not self.done:
                    continue  # before the value
                self.done = True
                self._report(items)
                return items, text[offset:]
            self._step(char, len(self._text), items)
            self._text.append(char)
            if not self._stack:
                self.done = True
                return items, text[offset + 1 :]
        self._report(items)
        return items, ""

    @property
    def text(self) -> str:
        """Everything read so far (from the value's first character)."""
        return "".join(self._text)

    def finish(self) -> list[Item]:
        """The text ended: report what the current call has (it stays incomplete)."""
        items: list[Item] = []
        self._report(items)
        return items

    def _step(self, char: str, pos: int, items: list[Item]) -> None:
        if self._in_string:
            self._string_char(char, pos)
        elif char == '"':
            self._in_string, self._string_start = True, pos
        elif char in "{[":
            self._open(char, pos)
        elif char in "}]":
            self._close(pos, items)
        elif char == ":" and self._at_call_level():
            self._colon(pos)
        elif char == ",":
            self._end_value(pos)
            self._expect_key = bool(self._stack) and self._stack[-1] == "{"

    def _string_char(self, char: str, pos: int) -> None:
        if self._escape:
            self._escape = False
        elif char == "\\":
            self._escape = True
        elif char == '"':
            self._in_string = False
            if self._at_call_level():
                self._string_done(pos)
            self._expect_key = False

    def _string_done(self, pos: int) -> None:
        """A string of the call object ended at `pos`: a key, or the call's name (known now,
        before whatever follows it)."""
        call = self._call
        assert call is not None
        text = _decoded("".join(self._text[self._string_start : pos]) + '"')
        if self._expect_key:
            call.key = text if isinstance(text, str) else None
        elif call.key == "name" and call.name is None and isinstance(text, str) and text:
            call.name = text

    def _open(self, char: str, pos: int) -> None:
        self._stack.append(char)
        self._expect_key = char == "{"
        if char == "{" and len(self._stack) == self._depth and self._call is None:
            self._call = _Call(self.calls, pos)
            self.calls += 1

    def _close(self, pos: int, items: list[Item]) -> None:
        if self._at_call_level():
            self._end_value(pos)
            self._finish_call(pos, items)
        self._stack.pop()
        self._expect_key = False

    def _colon(self, pos: int) -> None:
        call = self._call
        assert call is not None
        call.value_start = pos + 1
        if call.key in self._arguments_keys and call.arguments_start is None:
            call.arguments_start = pos + 1

    def _at_call_level(self) -> bool:
        return self._call is not None and len(self._stack) == self._depth

    def _end_value(self, pos: int) -> None:
        """A value of the call object ends at `pos` (its "," or "}")."""
        call = self._call
        if call is None or not self._at_call_level() or call.value_start is None:
            return
        if call.key == "name" and call.name is None:
            name = _decoded("".join(self._text[call.value_start : pos]))
            call.name = name if isinstance(name, str) and name else None
        elif call.arguments_start == call.value_start:
            call.arguments_end = pos
        call.key, call.value_start = None, None

    def _finish_call(self, pos: int, items: list[Item]) -> None:
        call = self._call
        assert call is not None
        if call.name is None:
            items.append(
                Item(Found.UNREAD, call.number, "".join(self._text[call.start : pos]) + "}")
            )
        else:
            self._report(items, final=True)
            items.append(Item(Found.END, call.number, ""))
        self._call = None

    def _report(self, items: list[Item], final: bool = False) -> None:
        """Announce the current call once its name is known, then its new arguments text."""
        call = self._call
        if call is None or call.name is None:
            return
        if not call.announced:
            call.announced = True
            items.append(Item(Found.NAME, call.number, call.name))
        text = self._arguments_text(call, final)
        if text:
            call.sent += len(text)
            items.append(Item(Found.ARGUMENTS, call.number, text))

    def _arguments_text(self, call: _Call, final: bool) -> str:
        if call.arguments_start is None:
            return "{}" if final and call.sent == 0 else ""
        end = call.arguments_end if call.arguments_end is not None else len(self._text)
        body = "".join(self._text[call.arguments_start : end]).strip(_SPACE)
        if body.startswith('"'):  # arguments as a JSON string: decoded, once complete
            if call.arguments_end is None or call.sent:
                return ""
            decoded = _decoded(body)
            return decoded if isinstance(decoded, str) else body
        return body[call.sent :]


def _decoded(raw: str) -> object:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        return None
