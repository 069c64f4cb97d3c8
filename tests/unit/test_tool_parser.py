"""The streaming tool-call parser: content and calls out of each syntax, however the text is cut."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from core.chat.tools.json_calls import Found, JsonCalls
from core.chat.tools.parser import ToolCallParser, mistral_call_id, openai_call_id
from core.chat.tools.syntax import ToolSyntax
from core.chat.types import ToolCallDelta

Calls = list[dict[str, str]]


def parse(
    syntax: ToolSyntax, text: str, step: int, names: frozenset[str] | None = None
) -> tuple[str, Calls, list[ToolCallDelta]]:
    """Feeds `text` in pieces of `step` characters; returns content, whole calls and pieces."""
    ids = (f"id{i}" for i in itertools.count())
    parser = ToolCallParser(syntax, lambda: next(ids), names=names)
    content, deltas = [], []
    for start in range(0, len(text), step):
        piece, found = parser.feed(text[start : start + step])
        content.append(piece)
        deltas.extend(found)
    piece, found = parser.finish()
    content.append(piece)
    deltas.extend(found)
    return "".join(content), joined(deltas), deltas


def joined(deltas: list[ToolCallDelta]) -> Calls:
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas:
        call = calls.setdefault(delta.call_index, {"id": "", "name": "", "arguments": ""})
        if delta.id:
            assert not call["id"], "a call's id comes once, on its first piece"
            call["id"], call["name"] = delta.id, delta.name
        else:
            assert call["id"], "argument pieces come after the call's first piece"
        call["arguments"] += delta.arguments
    return [calls[i] for i in sorted(calls)]


WEATHER = {"name": "get_weather", "arguments": '{"city": "Paris", "days": [1, {"x": "}]"}]}'}
CLOCK = {"name": "get_time", "arguments": "{}"}

CASES: list[tuple[ToolSyntax, str, str, list[dict[str, str]]]] = [
    (
        ToolSyntax.GENERIC,
        '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris", "days": '
        '[1, {"x": "}]"}]}}, {"name": "get_time", "arguments": {}}]}',
        "",
        [WEATHER, CLOCK],
    ),
    (
        ToolSyntax.GENERIC,
        '\n {"tool_calls": [{"name": "get_time", "arguments": {}}]}\n',
        "",
        [CLOCK],
    ),
    (ToolSyntax.GENERIC, "  Hello {there}", "  Hello {there}", []),
    # A JSON answer that is not calls (tools with a response schema) stays content.
    (ToolSyntax.GENERIC, '{"answer": 42}', '{"answer": 42}', []),
    (
        ToolSyntax.HERMES,
        "Let me look.\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris", "days": [1, {"x": "}]"}]}}'
        '\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
        "Let me look.\n",
        [WEATHER, CLOCK],
    ),
    (ToolSyntax.HERMES, "a < b <tool", "a < b <tool", []),
    # Arguments before the name, and arguments written as a JSON string.
    (
        ToolSyntax.HERMES,
        '<tool_call>{"arguments": "{\\"city\\": \\"Rome\\"}", "name": "get_weather"}</tool_call>',
        "",
        [{"name": "get_weather", "arguments": '{"city": "Rome"}'}],
    ),
    (
        ToolSyntax.LLAMA3,
        '{"name": "get_weather", "parameters": {"city": "Paris", "days": [1, {"x": "}]"}]}}',
        "",
        [WEATHER],
    ),
    (ToolSyntax.LLAMA3, "The weather is {fine}.", "The weather is {fine}.", []),
    (
        ToolSyntax.MISTRAL,
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "days": '
        '[1, {"x": "}]"}]}}, {"name": "get_time", "arguments": {}}]',
        "",
        [WEATHER, CLOCK],
    ),
]


@pytest.mark.parametrize(("syntax", "text", "content", "calls"), CASES)
@pytest.mark.parametrize("step", [1, 2, 3, 5, 8, 10_000])
def test_content_and_calls_do_not_depend_on_how_the_text_is_cut(
    syntax: ToolSyntax, text: str, content: str, calls: list[dict[str, str]], step: int
) -> None:
    got_content, got_calls, _ = parse(syntax, text, step)
    assert got_content == content
    assert [{"name": c["name"], "arguments": c["arguments"]} for c in got_calls] == calls
    assert [c["id"] for c in got_calls] == [f"id{i}" for i in range(len(calls))]
    for call in got_calls:
        assert isinstance(json.loads(call["arguments"]), dict)


def test_arguments_stream_in_pieces_after_the_named_first_piece() -> None:
    text = '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}'
    _, _, deltas = parse(ToolSyntax.GENERIC, text, 1)
    assert deltas[0] == ToolCallDelta(0, id="id0", name="get_weather", arguments="")
    pieces = [d.arguments for d in deltas[1:]]
    assert len(pieces) > 5 and all(not d.id and not d.name for d in deltas[1:])
    assert "".join(pieces) == '{"city": "Paris"}'


def test_a_call_cut_short_keeps_what_was_generated() -> None:
    text = '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Par'
    content, calls, _ = parse(ToolSyntax.GENERIC, text, 4)
    assert (content, calls) == (
        "",
        [{"id": "id0", "name": "get_weather", "arguments": '{"city": "Par'}],
    )


@pytest.mark.parametrize(
    ("syntax", "text", "content"),
    [
        # No call after the markers (unconstrained text): the markers stay in the text.
        (ToolSyntax.HERMES, '<tool_call>{"arguments": {"a": 1}}</tool_call> ok', None),
        (ToolSyntax.HERMES, "<tool_call>oops", None),
        (ToolSyntax.MISTRAL, "[TOOL_CALLS]hello", None),
        (ToolSyntax.GENERIC, '{"tool_calls": [{"foo": 1}]}', None),
        # A JSON answer that starts like a Llama 3 call but names no offered tool.
        (ToolSyntax.LLAMA3, '{"name": "Bob", "parameters": {}}', None),
    ],
)
@pytest.mark.parametrize("step", [1, 3, 1000])
def test_what_is_no_call_of_an_offered_tool_is_content(
    syntax: ToolSyntax, text: str, content: str | None, step: int
) -> None:
    got, calls, pieces = parse(syntax, text, step, names=frozenset({"get_weather"}))
    assert (got, calls, pieces) == (content or text, [], [])


def test_only_whole_calls_count_as_closed() -> None:
    parser = ToolCallParser(ToolSyntax.GENERIC)
    parser.feed('{"tool_calls": [{"name": "f", "arguments": {"a": 1}}, {"name": "g", "argu')
    parser.finish()
    assert (parser.calls, parser.closed, parser.all_closed) == (2, 1, False)
    whole = ToolCallParser(ToolSyntax.GENERIC)
    whole.feed('{"tool_calls": [{"name": "f", "arguments": {"a": 1}}]}')
    assert (whole.calls, whole.closed, whole.all_closed) == (1, 1, True)


def test_an_opener_cut_short_is_dropped_like_the_call_it_began() -> None:
    assert parse(ToolSyntax.GENERIC, '{"tool_calls":', 2)[:2] == ("", [])
    assert parse(ToolSyntax.GENERIC, '{"tool_calls": [{"nam', 2)[:2] == ("", [])


def test_held_back_opener_prefix_is_released_when_the_answer_ends() -> None:
    content, calls, _ = parse(ToolSyntax.MISTRAL, "See [TOOL", 2)
    assert (content, calls) == ("See [TOOL", [])


def test_json_reader_reports_unread_text_after_the_value() -> None:
    reader = JsonCalls(call_depth=1, arguments_key="arguments")
    items, rest = reader.feed('{"name": "f", "arguments": {"a": [1, 2]}} trailing')
    assert reader.done and rest == " trailing"
    assert [(i.kind, i.text) for i in items] == [
        (Found.NAME, "f"),
        (Found.ARGUMENTS, '{"a": [1, 2]}'),
        (Found.END, ""),
    ]


def test_json_reader_stops_at_text_that_is_no_json() -> None:
    reader = JsonCalls(call_depth=1, arguments_key="arguments")
    items, rest = reader.feed("  oops {")
    assert (items, rest, reader.done) == ([], "oops {", True)


@pytest.mark.parametrize(
    ("make", "pattern"),
    [(openai_call_id, r"call_[A-Za-z0-9]{24}"), (mistral_call_id, r"[A-Za-z0-9]{9}")],
)
def test_call_ids(make: Any, pattern: str) -> None:
    import re

    ids = {make() for _ in range(50)}
    assert len(ids) == 50 and all(re.fullmatch(pattern, i) for i in ids)
