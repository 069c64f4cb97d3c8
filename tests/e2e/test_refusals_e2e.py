"""Every 400 of #7 that other e2e files leave out, through both processes with the openai SDK:
each names its param. A stack of its own, so nothing here touches the shared core's caches."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.conftest import MODEL

pytestmark = pytest.mark.e2e

QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Name a colour."}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
# The core's auto_slots for the default 8192-token context (core/settings.py) is 8.
DEFAULT_SLOTS = 8


def _schema_format(keyword: str, value: Any) -> dict[str, Any]:
    """A json_schema response_format whose one property uses `keyword`, which the core's
    converter cannot enforce (core/engine/schema_checks.py UNENFORCED)."""
    prop = {"type": "integer", keyword: value}
    schema = {"type": "object", "properties": {"age": prop}, "required": ["age"]}
    return {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        pytest.param(
            {"prediction": {"type": "content", "content": "Red"}}, "prediction", id="prediction"
        ),
        pytest.param({"audio": {"voice": "alloy", "format": "wav"}}, "audio", id="audio"),
        pytest.param({"verbosity": "low"}, "verbosity", id="verbosity"),
        pytest.param(
            {"web_search_options": {"search_context_size": "low"}},
            "web_search_options",
            id="web_search_options",
        ),
        pytest.param({"logprobs": True, "top_logprobs": 21}, "top_logprobs", id="top_logprobs-21"),
        pytest.param({"top_logprobs": 2}, "top_logprobs", id="top_logprobs-without-logprobs"),
        # Checked by the core, which knows the model's slots.
        pytest.param({"n": DEFAULT_SLOTS + 1}, "n", id="n-over-slots"),
        pytest.param(
            {"response_format": _schema_format("minimum", 0)}, "response_format", id="minimum"
        ),
        pytest.param(
            {"response_format": _schema_format("multipleOf", 5)},
            "response_format",
            id="multipleOf",
        ),
    ],
)
def test_chat_refusals_are_400_naming_the_param(
    own_client: openai.OpenAI, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        own_client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2, **extra)
    assert caught.value.status_code == 400
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        pytest.param({"logprobs": 6}, "logprobs", id="logprobs-6"),
        pytest.param({"extra_body": {"tools": [TOOL]}}, "tools", id="tools"),
        pytest.param({"extra_body": {"tool_choice": "required"}}, "tool_choice", id="tool_choice"),
    ],
)
def test_completion_refusals_are_400_naming_the_param(
    own_client: openai.OpenAI, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        own_client.completions.create(model=MODEL, prompt="Red, green,", max_tokens=2, **extra)
    assert caught.value.status_code == 400
    assert caught.value.param == param


def test_n_up_to_the_slots_is_served(own_client: openai.OpenAI) -> None:
    # The other side of the n-over-slots refusal: the bound is the slots, not something lower.
    reply = own_client.chat.completions.create(
        model=MODEL, messages=QUESTION, n=DEFAULT_SLOTS, max_tokens=1
    )
    assert sorted(choice.index for choice in reply.choices) == list(range(DEFAULT_SLOTS))
