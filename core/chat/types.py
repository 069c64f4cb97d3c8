"""Frozen domain types for conversations and the tools a model may call in them."""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call an assistant made: `arguments` is JSON text of an object."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str
    name: str = ""
    # An assistant turn's calls; a tool turn names the call it answers.
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call; `parameters` is a JSON Schema of its arguments object."""

    name: str
    description: str = ""
    parameters: str = ""
    # Refuse schema keywords that cannot be enforced (else they only describe).
    strict: bool = False


class ToolChoiceMode(enum.Enum):
    NONE = "none"
    AUTO = "auto"
    REQUIRED = "required"
    FUNCTION = "function"


@dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: ToolChoiceMode = ToolChoiceMode.AUTO
    # With FUNCTION: the tool that must be called.
    function: str = ""


@dataclass(frozen=True, slots=True)
class ToolRequest:
    """What a chat request says about tools; `active` when the model may call any."""

    tools: tuple[Tool, ...] = ()
    choice: ToolChoice = ToolChoice()
    parallel: bool = True

    @property
    def active(self) -> bool:
        return bool(self.tools) and self.choice.mode is not ToolChoiceMode.NONE


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a call being generated: the first carries id and name, later ones argument
    text; a call's `arguments` pieces joined are its arguments' JSON text."""

    call_index: int
    id: str = ""
    name: str = ""
    arguments: str = ""
