"""OpenAI request fields that would change the answer but that Minerva cannot honour: each is a
400 naming it, never silently ignored. Fields that change nothing are accepted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rest_bridge.errors import BadRequest

# Read nowhere, and rightly: none of them changes the text generated.
HARMLESS_FIELDS = frozenset(
    {
        "user",
        "store",
        "metadata",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
    }
)


def _absent(value: Any) -> bool:
    return value is None


def _no_tools(value: Any) -> bool:
    return value is None or value == []


def _no_tool_call(value: Any) -> bool:
    return value is None or value == "none"


def _text_only(value: Any) -> bool:
    return value is None or value == ["text"]


@dataclass(frozen=True)
class Refusal:
    """Why a field is refused, and which of its values ask for nothing and pass."""

    reason: str
    accepts: Callable[[Any], bool] = _absent


_LEGACY = "the deprecated function-calling fields are not supported; send tools and tool_choice"
_CHAT_ONLY = "tools are a chat feature; use /v1/chat/completions"

REFUSED_FIELDS: dict[str, Refusal] = {
    "functions": Refusal(_LEGACY, _no_tools),
    "function_call": Refusal(_LEGACY, _no_tool_call),
    "reasoning_effort": Refusal("the models have no reasoning-effort setting"),
    "verbosity": Refusal("answer length is set with max_tokens, not verbosity"),
    "modalities": Refusal("only text output is supported", _text_only),
    "audio": Refusal("audio output is not supported"),
    "prediction": Refusal("predicted outputs are not supported"),
    "web_search_options": Refusal("web search is not supported"),
}
# What /v1/completions refuses besides: chat reads these.
COMPLETION_REFUSED_FIELDS: dict[str, Refusal] = {
    **REFUSED_FIELDS,
    "tools": Refusal(_CHAT_ONLY, _no_tools),
    "tool_choice": Refusal(_CHAT_ONLY, _no_tool_call),
    "parallel_tool_calls": Refusal(_CHAT_ONLY),
}
KNOWN_FIELDS = HARMLESS_FIELDS | REFUSED_FIELDS.keys()


def refuse_unsupported(body: dict[str, Any], refused: dict[str, Refusal] = REFUSED_FIELDS) -> None:
    """Raises BadRequest for the first field in `refused` that asks for something."""
    for name, refusal in refused.items():
        if not refusal.accepts(body.get(name)):
            raise BadRequest(
                f"'{name}' is not supported: {refusal.reason}", name, code="unsupported_parameter"
            )
