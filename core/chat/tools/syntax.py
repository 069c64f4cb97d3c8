"""The ways models write tool calls, and which one a chat template expects.

Each syntax is what the grammar makes the model write and what the parser reads back: an
opening marker, then JSON in which each call is an object with a name and its arguments.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class ToolSyntax(enum.Enum):
    # For templates that know no tools: a system instruction and a JSON object
    # {"tool_calls": [{"name": ..., "arguments": {...}}]} (llama.cpp's "generic" format).
    GENERIC = "generic"
    # Hermes 2/3, Qwen 2.5/3: <tool_call>{"name": ..., "arguments": {...}}</tool_call> per call.
    HERMES = "hermes"
    # Llama 3.1-3.3: one {"name": ..., "parameters": {...}} object as the whole answer.
    LLAMA3 = "llama3"
    # Mistral (Nemo, Small, ...): [TOOL_CALLS][{"name": ..., "arguments": {...}}, ...].
    MISTRAL = "mistral"


@dataclass(frozen=True, slots=True)
class SyntaxSpec:
    """How one syntax writes calls."""

    # The text that starts the calls. The grammar writes exactly this.
    opener: str
    # Whether the opener is the start of the calls' JSON (fed to the JSON reader) or a marker.
    opener_is_json: bool
    # Whether calls may start after some text (else only at the start of the answer).
    anywhere: bool
    # How many containers enclose each call object, counting the object itself.
    call_depth: int
    # The key of a call's arguments.
    arguments_key: str
    # The text that ends a block of calls, after its JSON ("" when the JSON ends it).
    closer: str = ""
    # Whether the template itself describes tools and renders calls and results.
    native: bool = True


SPECS: dict[ToolSyntax, SyntaxSpec] = {
    ToolSyntax.GENERIC: SyntaxSpec(
        opener='{"tool_calls": [',
        opener_is_json=True,
        anywhere=False,
        call_depth=3,
        arguments_key="arguments",
        native=False,
    ),
    ToolSyntax.HERMES: SyntaxSpec(
        opener="<tool_call>",
        opener_is_json=False,
        anywhere=True,
        call_depth=1,
        arguments_key="arguments",
        closer="</tool_call>",
    ),
    ToolSyntax.LLAMA3: SyntaxSpec(
        opener='{"name": ',
        opener_is_json=True,
        anywhere=False,
        call_depth=1,
        arguments_key="parameters",
    ),
    ToolSyntax.MISTRAL: SyntaxSpec(
        opener="[TOOL_CALLS]",
        opener_is_json=False,
        anywhere=True,
        call_depth=2,
        arguments_key="arguments",
    ),
}


def markers(syntax: ToolSyntax) -> tuple[str, ...]:
    """The marker texts around calls (not JSON): a vocabulary may hold each as one control
    token, whose text must then be shown for the parser to see it."""
    spec = SPECS[syntax]
    found = () if spec.opener_is_json else (spec.opener,)
    return found + ((spec.closer,) if spec.closer else ())


# A Jinja template that reads the `tools` variable (not just the word in a comment or text).
_READS_TOOLS = re.compile(r"\{[{%][^}]*\btools\b")
# One that compares a role with "tool" (or "ipython", Llama 3's name for it).
_SHOWS_TOOL_TURNS = re.compile(r"""['"](tool|ipython)['"]""")


def shows_tool_turns(template: str) -> bool:
    """Whether a template renders messages of role "tool" as such."""
    return bool(_SHOWS_TOOL_TURNS.search(template))


def detect(template: str) -> ToolSyntax:
    """The tool-call syntax a chat template expects; GENERIC when it knows none we can parse.

    Markers decide, as llama.cpp's common/chat.cpp does: a template that renders <tool_call>
    is Hermes-style, one that renders [TOOL_CALLS] is Mistral's, and a Llama 3 header template
    that reads `tools` is Llama 3.x's JSON style.
    """
    if not _READS_TOOLS.search(template):
        return ToolSyntax.GENERIC
    if "<tool_call>" in template:
        return ToolSyntax.HERMES
    if "[TOOL_CALLS]" in template:
        return ToolSyntax.MISTRAL
    if "<|start_header_id|>" in template:
        return ToolSyntax.LLAMA3
    return ToolSyntax.GENERIC
