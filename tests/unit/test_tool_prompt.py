"""Tools in the prompt: syntax detection, native and generic rendering, and checks of tool input."""

from __future__ import annotations

import json

import pytest

from core.chat.templates import BUILTIN_TEMPLATES, render_chat
from core.chat.tools.prompt import GENERIC_INSTRUCTION
from core.chat.tools.syntax import ToolSyntax, detect
from core.chat.tools.validate import checked_functions
from core.chat.types import ChatMessage, Tool, ToolCall, ToolChoice, ToolChoiceMode, ToolRequest
from core.errors import InvalidRequest
from tests import tool_templates

WEATHER = Tool(
    "get_weather",
    "Current weather",
    json.dumps({"type": "object", "properties": {"city": {"type": "string"}}}),
)
FUNCTIONS = checked_functions(ToolRequest((WEATHER,)))
CALL = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
HISTORY = [
    ChatMessage("user", "Weather in Paris?"),
    ChatMessage("assistant", "", tool_calls=(CALL,)),
    ChatMessage("tool", "sunny, 21 C", tool_call_id="call_1"),
]


def render(template: str, messages: list[ChatMessage], functions: object = FUNCTIONS) -> str:
    return render_chat(
        messages,
        model_template=template,
        architecture="llama",
        override=None,
        bos_token="<s>",
        eos_token="</s>",
        functions=functions,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("template", "syntax"),
    [
        (tool_templates.HERMES, ToolSyntax.HERMES),
        (tool_templates.LLAMA3, ToolSyntax.LLAMA3),
        (tool_templates.MISTRAL, ToolSyntax.MISTRAL),
        (BUILTIN_TEMPLATES["chatml"], ToolSyntax.GENERIC),
        (BUILTIN_TEMPLATES["llama3"], ToolSyntax.GENERIC),  # no `tools`: knows none
        ("{# <tool_call> tools #}{{ messages[0].content }}", ToolSyntax.GENERIC),
    ],
)
def test_syntax_is_detected_from_the_template(template: str, syntax: ToolSyntax) -> None:
    assert detect(template) is syntax


def test_a_native_template_gets_tools_calls_and_results_in_its_own_shape() -> None:
    text = render(tool_templates.HERMES, HISTORY)
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather"' in text
    assert (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    )
    assert "<tool_response>\nsunny, 21 C\n</tool_response>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_mistral_templates_see_the_call_ids() -> None:
    call = ToolCall("abcDEF123", "get_weather", '{"city": "Paris"}')
    messages = [HISTORY[0], ChatMessage("assistant", "", tool_calls=(call,)), HISTORY[2]]
    text = render(tool_templates.MISTRAL, messages)
    assert '"id": "abcDEF123"' in text and '[TOOL_RESULTS]{"content": "sunny, 21 C"' in text
    with pytest.raises(InvalidRequest, match="length 9"):
        render(tool_templates.MISTRAL, HISTORY)  # "call_1" is no Mistral id


def test_a_template_without_tools_gets_the_generic_instruction_and_polyfilled_turns() -> None:
    text = render(BUILTIN_TEMPLATES["chatml"], [ChatMessage("system", "Be brief."), *HISTORY])
    system = text.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nBe brief.\n\n" + GENERIC_INSTRUCTION)
    assert json.loads(system.splitlines()[-1])["name"] == "get_weather"
    assert (
        '<|im_start|>assistant\n{"tool_calls": [{"name": "get_weather", "arguments": '
        '{"city": "Paris"}}]}<|im_end|>' in text
    )
    # The result is a user turn naming the call's tool, found through its id.
    assert (
        '<|im_start|>user\n{"tool_response": {"name": "get_weather", "content": "sunny, 21 C"}}'
        in text
    )


def test_without_tools_offered_the_history_still_renders_and_no_instruction_is_added() -> None:
    text = render(BUILTIN_TEMPLATES["chatml"], HISTORY, functions=None)
    assert GENERIC_INSTRUCTION not in text
    assert '{"tool_calls": [{"name": "get_weather"' in text


def test_consecutive_tool_results_become_one_user_turn_for_alternating_templates() -> None:
    two = (CALL, ToolCall("call_2", "get_weather", '{"city": "Rome"}'))
    messages = [
        HISTORY[0],
        ChatMessage("assistant", "", tool_calls=two),
        ChatMessage("tool", "sunny", tool_call_id="call_1"),
        ChatMessage("tool", "rain", tool_call_id="call_2"),
    ]
    text = render(BUILTIN_TEMPLATES["gemma"], messages, functions=None)
    assert text.count("<start_of_turn>user") == 2
    assert '"content": "sunny"}}\n{"tool_response"' in text


def test_a_generic_template_that_shows_tool_turns_keeps_them() -> None:
    template = (
        "{% for m in messages %}{{ m.role }}{% if m.role == 'tool' %}!{% endif %};{% endfor %}"
    )
    assert render(template, HISTORY) == "system;user;assistant;tool!;"


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        (ToolRequest((Tool("bad name"),)), "tools[0].name"),
        (ToolRequest((Tool("x" * 65),)), "tools[0].name"),
        (ToolRequest((WEATHER, WEATHER)), "tools[1].name"),
        (ToolRequest((Tool("f", parameters="{nope"),)), "tools[0].parameters"),
        (ToolRequest((Tool("f", parameters='{"type": "string"}'),)), "tools[0].parameters"),
        (ToolRequest((Tool("f", parameters="[1]"),)), "tools[0].parameters"),
        (
            ToolRequest((WEATHER,), ToolChoice(ToolChoiceMode.FUNCTION, "nope")),
            "tool_choice.function_name",
        ),
        (ToolRequest((), ToolChoice(ToolChoiceMode.REQUIRED)), "tool_choice"),
        (ToolRequest(tuple(Tool(f"f{i}") for i in range(129))), "tools"),
    ],
)
def test_bad_tool_input_names_its_field(request_: ToolRequest, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        checked_functions(request_)
    assert caught.value.param == param


def test_a_tool_without_parameters_takes_an_empty_object() -> None:
    assert checked_functions(ToolRequest((Tool("now"),))) == [
        {"name": "now", "parameters": {"type": "object", "properties": {}}}
    ]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([ChatMessage("user", "x", tool_calls=(CALL,))], "messages[0].tool_calls"),
        (
            [ChatMessage("assistant", "", tool_calls=(ToolCall("c", "f", "[1]"),))],
            "messages[0].tool_calls[0].arguments",
        ),
        (
            [ChatMessage("assistant", "", tool_calls=(ToolCall("c", "f", "{bad"),))],
            "messages[0].tool_calls[0].arguments",
        ),
        (
            [ChatMessage("assistant", "", tool_calls=(ToolCall("c", "", "{}"),))],
            "messages[0].tool_calls[0].name",
        ),
    ],
)
def test_bad_tool_calls_in_the_history_name_their_field(
    messages: list[ChatMessage], param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        render(BUILTIN_TEMPLATES["chatml"], messages)
    assert caught.value.param == param


def test_gemma_alternation_holds_with_a_user_turn_after_the_results() -> None:
    alternating = (
        "{% for m in messages %}"
        "{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate') }}{% endif %}"
        "{{ m.role }};{% endfor %}"
    )
    messages = [*HISTORY, ChatMessage("user", "And tomorrow?")]
    assert render(alternating, messages, functions=None) == "user;assistant;user;"
