"""The tool-call grammar, checked by llama.cpp's own grammar engine on the default model's vocab."""

from __future__ import annotations

import json
from collections.abc import Iterator

import llama_cpp
import pytest

from core.chat.tools.grammar import tool_grammar
from core.chat.tools.parser import ToolCallParser
from core.chat.tools.syntax import ToolSyntax
from core.chat.tools.validate import checked_functions
from core.chat.types import Tool, ToolChoice, ToolChoiceMode, ToolRequest
from core.engine.constrained import Candidates
from core.engine.vocab import Vocab
from core.errors import InvalidRequest
from tests.conftest import DEFAULT_MODEL_PATH

WEATHER = Tool(
    "get_weather",
    "Weather in a city",
    json.dumps(
        {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        }
    ),
)
CLOCK = Tool("get_time")


class Checker:
    """Whether llama.cpp's grammar engine accepts a text, token by token, then the end."""

    def __init__(self, model: llama_cpp.llama_model_p) -> None:
        self.vocab = Vocab(model)
        self.candidates = Candidates(self.vocab.n_vocab)
        self.eos = llama_cpp.llama_vocab_eos(llama_cpp.llama_model_get_vocab(model))

    def accepts(self, grammar: str, text: str) -> bool:
        sampler = self.vocab.grammar_sampler(grammar)
        assert sampler is not None, "the grammar does not compile"
        try:
            for token in self.vocab.tokenize(text, False, False):
                if not self.candidates.allows(sampler, token):
                    return False
                llama_cpp.llama_sampler_accept(sampler, token)
            return self.candidates.allows(sampler, self.eos)
        finally:
            self.vocab.free_sampler(sampler)


@pytest.fixture(scope="module")
def checker() -> Iterator[Checker]:
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(DEFAULT_MODEL_PATH).encode(), params)
    assert model
    yield Checker(model)
    llama_cpp.llama_model_free(model)


def grammar(
    syntax: ToolSyntax,
    mode: ToolChoiceMode = ToolChoiceMode.AUTO,
    function: str = "",
    parallel: bool = True,
    json_schema: str = "",
) -> str:
    request = ToolRequest((WEATHER, CLOCK), ToolChoice(mode, function), parallel)
    return tool_grammar(syntax, request, checked_functions(request), json_schema)


PARIS = '{"name": "get_weather", "ARGS": {"city": "Paris", "unit": "celsius"}}'
NOW = '{"name": "get_time", "ARGS": {}}'
# (syntax, one call, two calls), as the grammar writes them.
WRITTEN = {
    ToolSyntax.GENERIC: (
        '{"tool_calls": [' + PARIS + "]}",
        '{"tool_calls": [' + PARIS + ", " + NOW + "]}",
    ),
    ToolSyntax.HERMES: (
        f"<tool_call>\n{PARIS}\n</tool_call>",
        f"<tool_call>\n{PARIS}\n</tool_call>\n<tool_call>\n{NOW}\n</tool_call>",
    ),
    ToolSyntax.MISTRAL: (f"[TOOL_CALLS][{PARIS}]", f"[TOOL_CALLS][{PARIS},{NOW}]"),
    ToolSyntax.LLAMA3: (PARIS, None),
}


def written(syntax: ToolSyntax, text: str) -> str:
    return text.replace("ARGS", "parameters" if syntax is ToolSyntax.LLAMA3 else "arguments")


@pytest.mark.parametrize("syntax", list(ToolSyntax))
def test_calls_as_written_parse_back(checker: Checker, syntax: ToolSyntax) -> None:
    one, two = WRITTEN[syntax]
    for text in filter(None, (one, two)):
        text = written(syntax, text)
        assert checker.accepts(grammar(syntax), text)
        assert checker.accepts(grammar(syntax, ToolChoiceMode.REQUIRED), text)
        parser = ToolCallParser(syntax)
        content, deltas = parser.feed(text)
        rest, more = parser.finish()
        assert content + rest == ""
        assert [d.name for d in deltas + more if d.id] == (
            ["get_weather"] if text == written(syntax, one) else ["get_weather", "get_time"]
        )


@pytest.mark.parametrize("syntax", list(ToolSyntax))
def test_auto_allows_text_and_required_does_not(checker: Checker, syntax: ToolSyntax) -> None:
    for text in ("Paris is sunny.", "  It is {warm} <b> [ok]\nBye.", ""):
        assert checker.accepts(grammar(syntax), text), text
        assert not checker.accepts(grammar(syntax, ToolChoiceMode.REQUIRED), text), text


@pytest.mark.parametrize("syntax", list(ToolSyntax))
def test_calls_must_follow_the_tools_schemas(checker: Checker, syntax: ToolSyntax) -> None:
    one = written(syntax, WRITTEN[syntax][0])
    for wrong in (
        one.replace('"Paris"', "42"),  # city must be a string
        one.replace('"celsius"', '"kelvin"'),  # not in the enum
        one.replace('"city": "Paris", ', ""),  # city is required
        one.replace("get_weather", "get_wether"),  # no such tool
    ):
        assert not checker.accepts(grammar(syntax), wrong), wrong
        assert not checker.accepts(grammar(syntax, ToolChoiceMode.REQUIRED), wrong), wrong


@pytest.mark.parametrize("syntax", [ToolSyntax.GENERIC, ToolSyntax.HERMES, ToolSyntax.MISTRAL])
def test_one_call_only_without_parallel_calls_or_with_a_named_function(
    checker: Checker, syntax: ToolSyntax
) -> None:
    one, two = (written(syntax, text) for text in WRITTEN[syntax] if text)
    assert checker.accepts(grammar(syntax, parallel=False), one)
    assert not checker.accepts(grammar(syntax, parallel=False), two)
    named = grammar(syntax, ToolChoiceMode.FUNCTION, "get_weather")
    assert checker.accepts(named, one)
    assert not checker.accepts(named, two)
    assert not checker.accepts(grammar(syntax, ToolChoiceMode.FUNCTION, "get_time"), one)


def test_a_response_schema_constrains_the_text_answer(checker: Checker) -> None:
    schema = json.dumps(
        {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    )
    constrained = grammar(ToolSyntax.GENERIC, json_schema=schema)
    assert checker.accepts(constrained, '{"ok": true}')
    assert not checker.accepts(constrained, "Sure!")
    assert checker.accepts(constrained, written(ToolSyntax.GENERIC, WRITTEN[ToolSyntax.GENERIC][0]))


def test_an_unconvertible_parameters_schema_names_its_tool() -> None:
    bad = Tool(
        "f", parameters=json.dumps({"type": "object", "properties": {"a": {"$ref": "#/nope"}}})
    )
    request = ToolRequest((CLOCK, bad))
    with pytest.raises(InvalidRequest) as caught:
        tool_grammar(ToolSyntax.GENERIC, request, checked_functions(request), "")
    assert caught.value.param == "tools[1].parameters"
