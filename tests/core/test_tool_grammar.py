"""The tool-call grammar, checked by llama.cpp's own grammar engine on the default model's vocab."""

from __future__ import annotations

import json
from collections.abc import Iterator

import llama_cpp
import pytest

from core.chat.tools.grammar import lazy_trigger, tool_grammar
from core.chat.tools.parser import ToolCallParser
from core.chat.tools.syntax import ToolSyntax
from core.chat.tools.validate import checked_functions
from core.chat.types import Tool, ToolChoice, ToolChoiceMode, ToolRequest
from core.engine.constrained import Candidates, LazyGrammar
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

    def accepts_lazily(self, grammar: str, trigger: str, text: str) -> bool:
        """As the step loop follows a lazy grammar: free until the trigger, then checked."""
        sampler = self.vocab.grammar_sampler(grammar)
        assert sampler is not None, "the grammar does not compile"
        lazy: LazyGrammar | None = LazyGrammar(sampler, trigger.encode())
        try:
            for token in self.vocab.tokenize(text, False, False):
                if lazy is not None:
                    started = lazy.feed(self.vocab.piece(token, special=True))
                    if started is not None:
                        if not lazy.wake(started, self.vocab, self.candidates):
                            return False
                        lazy = None
                    continue
                if not self.candidates.allows(sampler, token):
                    return False
                llama_cpp.llama_sampler_accept(sampler, token)
            return lazy is not None or self.candidates.allows(sampler, self.eos)
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


LAZY = [ToolSyntax.HERMES, ToolSyntax.MISTRAL]  # calls may follow text
ANCHORED = [ToolSyntax.GENERIC, ToolSyntax.LLAMA3]  # calls only open the answer


def auto_accepts(checker: Checker, syntax: ToolSyntax, text: str) -> bool:
    """Whether an AUTO answer may be `text`, the grammar followed as the engine follows it."""
    request = ToolRequest((WEATHER, CLOCK), ToolChoice(ToolChoiceMode.AUTO), True)
    trigger = lazy_trigger(syntax, request, "")
    if trigger:
        return checker.accepts_lazily(grammar(syntax), trigger, text)
    return checker.accepts(grammar(syntax), text)


@pytest.mark.parametrize("syntax", list(ToolSyntax))
def test_calls_as_written_parse_back(checker: Checker, syntax: ToolSyntax) -> None:
    one, two = WRITTEN[syntax]
    for text in filter(None, (one, two)):
        text = written(syntax, text)
        assert auto_accepts(checker, syntax, text)
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
        assert auto_accepts(checker, syntax, text), text
        assert not checker.accepts(grammar(syntax, ToolChoiceMode.REQUIRED), text), text


@pytest.mark.parametrize("syntax", LAZY)
def test_lazy_auto_text_may_start_as_a_call_would(checker: Checker, syntax: ToolSyntax) -> None:
    for text in ("<b>bold</b> and [1, 2]", "[1, 2] or <tool> or [TOOL]", "<tool_cal"):
        assert auto_accepts(checker, syntax, text), text


@pytest.mark.parametrize("syntax", ANCHORED)
def test_anchored_auto_text_may_not_start_as_a_call_does(
    checker: Checker, syntax: ToolSyntax
) -> None:
    # Decided at the first character: text that opens like a call is held to one.
    assert not auto_accepts(checker, syntax, '{"a": 1}')
    assert not auto_accepts(checker, syntax, ' {"tool_response": {"name": "get_weather"}}')


@pytest.mark.parametrize("syntax", LAZY)
def test_auto_calls_after_text_are_constrained(checker: Checker, syntax: ToolSyntax) -> None:
    one = written(syntax, WRITTEN[syntax][0])
    prose = "Let me look that up <for you> [now]. "
    assert auto_accepts(checker, syntax, prose + one)
    assert not checker.accepts(grammar(syntax, ToolChoiceMode.REQUIRED), prose + one)
    parser = ToolCallParser(syntax)
    content, deltas = parser.feed(prose + one)
    rest, more = parser.finish()
    assert content + rest == prose.rstrip() or content + rest == prose
    assert [d.name for d in deltas + more if d.id] == ["get_weather"]
    # Once the opener is out, the calls' grammar rules: no text after the calls, no bad call.
    assert not auto_accepts(checker, syntax, prose + one + " Done.")
    assert not auto_accepts(checker, syntax, prose + one.replace('"Paris"', "42"))


@pytest.mark.parametrize("syntax", list(ToolSyntax))
def test_calls_must_follow_the_tools_schemas(checker: Checker, syntax: ToolSyntax) -> None:
    one = written(syntax, WRITTEN[syntax][0])
    for wrong in (
        one.replace('"Paris"', "42"),  # city must be a string
        one.replace('"celsius"', '"kelvin"'),  # not in the enum
        one.replace('"city": "Paris", ', ""),  # city is required
        one.replace("get_weather", "get_wether"),  # no such tool
    ):
        assert not auto_accepts(checker, syntax, wrong), wrong
        assert not checker.accepts(grammar(syntax, ToolChoiceMode.REQUIRED), wrong), wrong


def test_a_lazy_grammar_waits_for_its_whole_trigger(checker: Checker) -> None:
    sampler = checker.vocab.grammar_sampler('root ::= "<tool_call>\\n" [a-z]+')
    assert sampler is not None
    lazy = LazyGrammar(sampler, b"<tool_call>")
    try:
        assert lazy.feed(b"Hi <tool") is None
        assert lazy.feed(b"_cal") is None
        # Split across pieces, found with what follows it in the completing piece.
        assert lazy.feed(b"l>\n") == b"<tool_call>\n"
        assert lazy.wake(b"<tool_call>\n", checker.vocab, checker.candidates)
    finally:
        checker.vocab.free_sampler(sampler)


def test_a_trigger_the_grammar_cannot_continue_is_refused_not_fed(checker: Checker) -> None:
    # llama.cpp's own lazy grammar would accept this unchecked and abort the process.
    sampler = checker.vocab.grammar_sampler('root ::= "<tool_call>\\n" [a-z]+')
    assert sampler is not None
    try:
        lazy = LazyGrammar(sampler, b"<tool_call>")
        started = lazy.feed(b"<tool_call> {")
        assert started == b"<tool_call> {"
        assert not lazy.wake(started, checker.vocab, checker.candidates)
        assert not LazyGrammar(sampler, b"<").wake(b"<\xc3", checker.vocab, checker.candidates)
    finally:
        checker.vocab.free_sampler(sampler)


def test_a_trigger_the_vocabulary_cannot_encode_starts_no_grammar(
    checker: Checker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A vocabulary without an unknown token refuses such text (core.engine.vocab): that choice
    # goes on without the grammar instead of failing every request of the step.
    def refuse(*_args: object) -> list[int]:
        raise InvalidRequest("the model's vocabulary cannot encode part of the text")

    sampler = checker.vocab.grammar_sampler('root ::= "<tool_call>\\n" [a-z]+')
    assert sampler is not None
    try:
        monkeypatch.setattr(checker.vocab, "tokenize", refuse)
        assert not LazyGrammar(sampler, b"<").wake(
            b"<tool_call>\n", checker.vocab, checker.candidates
        )
    finally:
        checker.vocab.free_sampler(sampler)


def test_no_lazy_grammar_with_a_response_schema_or_without_auto() -> None:
    request = ToolRequest((WEATHER,), ToolChoice(ToolChoiceMode.AUTO), True)
    assert lazy_trigger(ToolSyntax.HERMES, request, "") == "<tool_call>"
    assert lazy_trigger(ToolSyntax.MISTRAL, request, "") == "[TOOL_CALLS]"
    assert lazy_trigger(ToolSyntax.HERMES, request, '{"type": "object"}') == ""
    assert lazy_trigger(ToolSyntax.GENERIC, request, "") == ""
    assert lazy_trigger(ToolSyntax.LLAMA3, request, "") == ""
    required = ToolRequest((WEATHER,), ToolChoice(ToolChoiceMode.REQUIRED), True)
    assert lazy_trigger(ToolSyntax.HERMES, required, "") == ""


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
