"""A chat stream with tool calls parsed out: each choice's text split into content and calls."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace

from core.chat.tools.parser import ToolCallParser
from core.chat.tools.syntax import ToolSyntax
from core.chat.types import ToolCallDelta
from core.engine.types import FinishReason, GenerationEvent, GenerationResult, TokenChunk


@dataclass(frozen=True, slots=True)
class ChatChunk:
    """A piece of a chat answer: `chunk.text` is content only, the calls' pieces beside it."""

    chunk: TokenChunk
    tool_calls: tuple[ToolCallDelta, ...] = ()


ChatEvent = TokenChunk | ChatChunk | GenerationResult


async def with_tool_calls(
    events: AsyncGenerator[GenerationEvent, None], syntax: ToolSyntax, names: frozenset[str]
) -> AsyncGenerator[ChatEvent, None]:
    """Every chunk with its calls (to the tools named) parsed out; a choice whose calls are all
    whole and that ended by itself ends with FinishReason.TOOL_CALLS. Closing this closes
    `events` (stopping the generation)."""
    async with contextlib.aclosing(events):
        async for event in _parsed(events, syntax, names):
            yield event


async def _parsed(
    events: AsyncGenerator[GenerationEvent, None], syntax: ToolSyntax, names: frozenset[str]
) -> AsyncGenerator[ChatEvent, None]:
    parsers: dict[int, ToolCallParser] = {}
    async for event in events:
        if isinstance(event, TokenChunk):
            parser = parsers.get(event.index)
            if parser is None:
                parser = parsers[event.index] = ToolCallParser(syntax, names=names)
            text, deltas = parser.feed(event.text)
            yield ChatChunk(replace(event, text=text), tuple(deltas))
            continue
        for index, parser in sorted(parsers.items()):
            text, deltas = parser.finish()
            if text or deltas:
                yield ChatChunk(TokenChunk(text, (), index), tuple(deltas))
        yield _ended_with_calls(event, {i for i, p in parsers.items() if p.calls and p.all_closed})


def _ended_with_calls(result: GenerationResult, called: set[int]) -> GenerationResult:
    if not called:
        return result
    choices = tuple(
        replace(end, finish_reason=FinishReason.TOOL_CALLS)
        if end.index in called and end.finish_reason is FinishReason.STOP
        else end
        for end in result.choices
    )
    return replace(result, finish_reason=choices[0].finish_reason, choices=choices)
