"""Tool calling through the real core: each tool_choice, streamed pieces, history, native syntax."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
from minerva.v1 import inference_pb2 as pb

from core.engine.llama_engine import LlamaEngine
from core.engine.types import GenerationRequest
from core.server import start
from core.settings import ModelOptions
from tests import tool_templates
from tests.conftest import DEFAULT_MODEL_ID, DEFAULT_MODEL_PATH
from tests.core.conftest import Client, core_settings, make_models_dir
from tests.core.test_generation import collect, text_of
from tests.core.test_validation import expect_error, param_of

pytestmark = pytest.mark.asyncio(loop_scope="session")

CITY_SCHEMA = {
    "type": "object",
    # A bound keeps this small model from writing one endless string.
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city"],
}
WEATHER = pb.Tool(
    name="get_weather", description="Current weather in a city", parameters=json.dumps(CITY_SCHEMA)
)
CLOCK = pb.Tool(name="get_time", description="The time now")
ASK = pb.ChatMessage(role="user", content="What is the weather in Paris?")
PARIS_CALL = pb.ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')
# One worked example, then a new question: the model continues in the calls' format.
FEW_SHOT = [
    ASK,
    pb.ChatMessage(role="assistant", tool_calls=[PARIS_CALL]),
    pb.ChatMessage(role="tool", content="sunny, 21 C", tool_call_id="call_1"),
    pb.ChatMessage(role="assistant", content="It is sunny and 21 C in Paris."),
    pb.ChatMessage(role="user", content="What is the weather in Berlin?"),
]
HERMES_ID = "smol-hermes"


def chat(
    *messages: pb.ChatMessage,
    tools: tuple[pb.Tool, ...] = (WEATHER, CLOCK),
    mode: int = pb.TOOL_CHOICE_MODE_UNSPECIFIED,
    function: str = "",
    model: str = DEFAULT_MODEL_ID,
    parallel: bool = False,
    **sampling: object,
) -> pb.ChatRequest:
    """A chat request; one call per answer unless `parallel` (this small model, allowed
    several, goes on calling until max_tokens)."""
    request = pb.ChatRequest(
        model_id=model,
        messages=messages or [ASK],
        tools=tools,
        parallel_tool_calls=parallel,
        sampling=pb.SamplingParams(**{"temperature": 0.0, "max_tokens": 80, **sampling}),  # type: ignore[arg-type]
    )
    if mode or function:
        request.tool_choice.CopyFrom(pb.ToolChoice(mode=mode, function_name=function))
    return request


@dataclass
class Answer:
    content: str
    calls: dict[int, dict[int, dict[str, str]]]  # choice -> call index -> id, name, arguments
    pieces: list[pb.ToolCallDelta]
    final: pb.GenerationFinal

    def only(self, choice: int = 0) -> list[dict[str, str]]:
        return [call for _, call in sorted(self.calls.get(choice, {}).items())]


async def answer(call: grpc.aio.UnaryStreamCall) -> Answer:
    chunks, final = await collect(call)
    calls: dict[int, dict[int, dict[str, str]]] = {}
    pieces = []
    for chunk in chunks:
        for piece in chunk.tool_calls:
            pieces.append(piece)
            made = calls.setdefault(chunk.index, {}).setdefault(
                piece.call_index, {"id": "", "name": "", "arguments": ""}
            )
            if piece.id:
                assert not made["id"], "a call's id and name come once, first"
                made["id"], made["name"] = piece.id, piece.name
            else:
                assert made["id"], "argument pieces come after the call's first piece"
            made["arguments"] += piece.arguments
    return Answer(text_of([c for c in chunks if c.index == 0]), calls, pieces, final)


def weather_arguments(call: dict[str, str]) -> dict[str, object]:
    assert call["name"] == "get_weather"
    arguments = json.loads(call["arguments"])
    assert isinstance(arguments["city"], str) and arguments["city"]
    assert set(arguments) <= {"city", "unit"}
    assert arguments.get("unit", "celsius") in ("celsius", "fahrenheit")
    return arguments


async def test_required_makes_a_call_that_follows_the_schema(client: Client) -> None:
    got = await answer(client.inference.Chat(chat(mode=pb.TOOL_CHOICE_MODE_REQUIRED)))
    assert got.content == ""
    calls = got.only()
    assert calls and calls[0]["id"].startswith("call_")
    assert weather_arguments(calls[0])["city"] == "Paris"
    assert got.final.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    assert got.final.choices[0].finish_reason == pb.FINISH_REASON_TOOL_CALLS


async def test_the_first_piece_names_the_call_and_arguments_stream_after(client: Client) -> None:
    got = await answer(client.inference.Chat(chat(mode=pb.TOOL_CHOICE_MODE_REQUIRED)))
    first = got.pieces[0]
    assert (first.call_index, first.name) == (0, "get_weather") and first.id
    argument_pieces = [p for p in got.pieces if p.call_index == 0 and not p.id]
    assert len(argument_pieces) >= 3  # streamed, not sent once complete
    assert json.loads(first.arguments + "".join(p.arguments for p in argument_pieces))


async def test_a_named_function_is_the_one_called(client: Client) -> None:
    got = await answer(
        client.inference.Chat(chat(function="get_time", mode=pb.TOOL_CHOICE_MODE_FUNCTION))
    )
    assert [(c["name"], json.loads(c["arguments"])) for c in got.only()] == [("get_time", {})]
    assert got.final.finish_reason == pb.FINISH_REASON_TOOL_CALLS


async def test_auto_follows_a_worked_example_into_a_call(client: Client) -> None:
    got = await answer(client.inference.Chat(chat(*FEW_SHOT)))
    calls = got.only()
    assert [weather_arguments(c)["city"] for c in calls] == ["Berlin"]
    assert got.content == ""
    assert got.final.finish_reason == pb.FINISH_REASON_TOOL_CALLS


async def test_auto_may_answer_in_text(client: Client) -> None:
    got = await answer(client.inference.Chat(chat(max_tokens=24)))
    assert got.calls == {} and got.content.strip()
    assert got.final.finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH)


async def test_none_offers_no_tools_and_parses_nothing(client: Client) -> None:
    request = chat(
        pb.ChatMessage(role="user", content='Reply with exactly {"tool_calls": []}'),
        mode=pb.TOOL_CHOICE_MODE_NONE,
        max_tokens=24,
    )
    got = await answer(client.inference.Chat(request))
    assert got.calls == {}
    assert got.final.finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH)
    template = await client.inference.ApplyChatTemplate(
        pb.ApplyChatTemplateRequest(
            model_id=DEFAULT_MODEL_ID,
            messages=[ASK],
            tools=[WEATHER],
            tool_choice=request.tool_choice,
        )
    )
    assert "get_weather" not in template.prompt


async def test_parallel_calls_are_allowed_or_not(client: Client) -> None:
    two = pb.ChatMessage(role="user", content="Weather in Paris and in Rome? Call the tool twice.")
    single = await answer(client.inference.Chat(chat(two, mode=pb.TOOL_CHOICE_MODE_REQUIRED)))
    assert len(single.only()) == 1
    weather_arguments(single.only()[0])
    assert single.final.finish_reason == pb.FINISH_REASON_TOOL_CALLS
    request = chat(two, mode=pb.TOOL_CHOICE_MODE_REQUIRED, parallel=True, max_tokens=120)
    several = await answer(client.inference.Chat(request))
    calls = several.only()
    assert len(calls) >= 2
    for call in calls[:-1] if several.final.finish_reason == pb.FINISH_REASON_LENGTH else calls:
        assert call["name"] in ("get_weather", "get_time")
        assert isinstance(json.loads(call["arguments"]), dict)


async def test_each_choice_parses_its_own_calls(client: Client) -> None:
    request = chat(mode=pb.TOOL_CHOICE_MODE_REQUIRED, n=2, temperature=0.8, seed=7)
    got = await answer(client.inference.Chat(request))
    assert set(got.calls) == {0, 1}
    for index in (0, 1):
        [call] = got.only(index)
        assert call["name"] in ("get_weather", "get_time")
        json.loads(call["arguments"])
    assert [c.finish_reason for c in got.final.choices] == [pb.FINISH_REASON_TOOL_CALLS] * 2


async def test_a_call_cut_by_max_tokens_ends_with_length(client: Client) -> None:
    # 14 tokens reach past the name, not to the end of the arguments.
    request = chat(mode=pb.TOOL_CHOICE_MODE_REQUIRED, max_tokens=14)
    got = await answer(client.inference.Chat(request))
    [call] = got.only()
    assert call["name"] == "get_weather" and not call["arguments"].endswith("}")
    assert got.final.finish_reason == pb.FINISH_REASON_LENGTH


async def test_a_response_schema_constrains_the_text_answer_beside_tools(client: Client) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    }
    request = chat(pb.ChatMessage(role="user", content="Say hi."), json_schema=json.dumps(schema))
    got = await answer(client.inference.Chat(request))
    if got.calls:  # the model may still call a tool; then each call is well-formed
        assert all(json.loads(c["arguments"]) is not None for c in got.only())
    else:
        assert set(json.loads(got.content)) == {"answer"}


async def test_apply_chat_template_shows_the_tools_and_counts_the_prompt(client: Client) -> None:
    response = await client.inference.ApplyChatTemplate(
        pb.ApplyChatTemplateRequest(model_id=DEFAULT_MODEL_ID, messages=FEW_SHOT, tools=[WEATHER])
    )
    assert (
        '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}'
        in response.prompt
    )
    assert response.prompt.endswith("<|im_start|>assistant\n")
    tokens = await client.inference.Tokenize(
        pb.TokenizeRequest(model_id=DEFAULT_MODEL_ID, text=response.prompt, parse_special=True)
    )
    assert response.prompt_tokens == len(tokens.token_ids) > 100


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        (chat(tools=(pb.Tool(name="bad name"),)), "tools[0].name"),
        (chat(tools=(WEATHER, WEATHER)), "tools[1].name"),
        (chat(tools=(pb.Tool(name="f", parameters='{"type": "array"}'),)), "tools[0].parameters"),
        (chat(function="nope", mode=pb.TOOL_CHOICE_MODE_FUNCTION), "tool_choice.function_name"),
        (chat(tools=(), mode=pb.TOOL_CHOICE_MODE_REQUIRED), "tool_choice"),
        (chat(grammar='root ::= "x"'), "sampling.grammar"),
        (
            chat(
                pb.ChatMessage(role="assistant", tool_calls=[pb.ToolCall(name="f", arguments="[")])
            ),
            "messages[0].tool_calls[0].arguments",
        ),
        (
            chat(pb.ChatMessage(role="user", content="x", tool_calls=[PARIS_CALL])),
            "messages[0].tool_calls",
        ),
    ],
)
async def test_bad_tool_input_is_invalid_argument_naming_the_field(
    client: Client, request_: pb.ChatRequest, param: str
) -> None:
    error = await expect_error(client.inference.Chat(request_))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await param_of(error) == param


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def hermes(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    """A core serving the default model also under a Hermes-style (Qwen 2.5) tool template."""
    models_dir = make_models_dir(tmp_path_factory.mktemp("hermes"), DEFAULT_MODEL_PATH)
    configured = ModelOptions(HERMES_ID, DEFAULT_MODEL_PATH, chat_template=tool_templates.HERMES)
    settings = core_settings(
        models_dir, models=(configured,), allowed_roots=(DEFAULT_MODEL_PATH.parent,)
    )
    core = await start(settings)
    own = Client(core)
    yield own
    await own.channel.close()
    await core.stop(0)


async def test_a_native_template_describes_the_tools_and_its_syntax_is_parsed(
    hermes: Client,
) -> None:
    template = await hermes.inference.ApplyChatTemplate(
        pb.ApplyChatTemplateRequest(model_id=HERMES_ID, messages=FEW_SHOT, tools=[WEATHER])
    )
    assert "<tools>\n" in template.prompt and '"name": "get_weather"' in template.prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in template.prompt
    assert "<tool_response>\nsunny, 21 C\n</tool_response>" in template.prompt
    got = await answer(
        hermes.inference.Chat(chat(model=HERMES_ID, mode=pb.TOOL_CHOICE_MODE_REQUIRED))
    )
    assert got.content == ""
    assert weather_arguments(got.only()[0])["city"] == "Paris"
    assert got.final.finish_reason == pb.FINISH_REASON_TOOL_CALLS


@pytest.mark.parametrize(
    ("mode", "trigger"),
    [(pb.TOOL_CHOICE_MODE_AUTO, "<tool_call>"), (pb.TOOL_CHOICE_MODE_REQUIRED, "")],
)
async def test_hermes_auto_waits_for_the_opener_and_required_does_not(
    hermes: Client, monkeypatch: pytest.MonkeyPatch, mode: int, trigger: str
) -> None:
    # What the engine is asked for; that it then follows the grammar only from the trigger on
    # is tests/core/test_lazy_grammar.py's (this model rarely writes "<tool_call>" after text).
    seen: list[GenerationRequest] = []
    generate = LlamaEngine.generate

    def spy(engine: LlamaEngine, request: GenerationRequest) -> object:
        seen.append(request)
        return generate(engine, request)

    monkeypatch.setattr(LlamaEngine, "generate", spy)
    await answer(hermes.inference.Chat(chat(model=HERMES_ID, mode=mode, max_tokens=4)))
    [request] = seen
    assert request.sampling.grammar_trigger == trigger
    assert request.sampling.grammar.endswith("root ::= mv-calls")


async def test_the_model_keeps_serving_after_tool_errors(client: Client) -> None:
    await expect_error(client.inference.Chat(chat(tools=(pb.Tool(name="x y"),))))
    _, final = await collect(client.inference.Chat(chat(tools=(), max_tokens=2)))
    assert final.usage.completion_tokens >= 1


def one_tool(parameters: dict[str, object], strict: bool = False) -> tuple[pb.Tool, ...]:
    return (pb.Tool(name="f", parameters=json.dumps(parameters), strict=strict),)


@pytest.mark.parametrize(
    ("parameters", "check"),
    [
        # A property named like the server's own rule once was: the call must still end.
        ({"properties": {"call": {"enum": ["a", "b"]}}, "required": ["call"]}, {"call"}),
        # Regex shorthands and quotes in literals, which the converter alone gets wrong.
        (
            {"properties": {"zip": {"type": "string", "pattern": "^\\d{5}$"}}, "required": ["zip"]},
            {"zip"},
        ),
        (
            {"properties": {"size": {"enum": ['5" screen', "back\\slash"]}}, "required": ["size"]},
            {"size"},
        ),
    ],
)
async def test_awkward_schemas_still_give_whole_calls_that_follow_them(
    client: Client, parameters: dict[str, object], check: set[str]
) -> None:
    request = chat(
        tools=one_tool({"type": "object", **parameters}), mode=pb.TOOL_CHOICE_MODE_REQUIRED
    )
    got = await answer(client.inference.Chat(request))
    assert got.final.finish_reason == pb.FINISH_REASON_TOOL_CALLS, got.only()
    [call] = got.only()
    arguments = json.loads(call["arguments"])
    assert set(arguments) == check
    if "zip" in arguments:
        assert re.fullmatch(r"\d{5}", arguments["zip"])
    if "size" in arguments:
        assert arguments["size"] in ('5" screen', "back\\slash")
    if "call" in arguments:
        assert arguments["call"] in ("a", "b")


async def test_a_stop_string_that_cuts_a_call_is_no_tool_calls_ending(client: Client) -> None:
    request = chat(mode=pb.TOOL_CHOICE_MODE_REQUIRED, stop=["Paris"])
    got = await answer(client.inference.Chat(request))
    assert got.only() and got.final.finish_reason == pb.FINISH_REASON_STOP


@pytest.mark.parametrize(
    ("tools", "param"),
    [
        (
            one_tool(
                {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}},
                strict=True,
            ),
            "tools[0].parameters",
        ),
        (
            one_tool(
                {"type": "object", "properties": {"e": {"type": "string", "format": "email"}}},
                strict=True,
            ),
            "tools[0].parameters",
        ),
        (one_tool({"items": {"type": "integer"}}), "tools[0].parameters"),
        (
            one_tool({"$ref": "#/$defs/s", "$defs": {"s": {"type": "string"}}}),
            "tools[0].parameters",
        ),
        (one_tool({"type": "object", "description": "x" * 70_000}), "tools[0].parameters"),
        (
            (pb.Tool(name="f", parameters='{"type": "object", "properties": {"\\ud800": {}}}'),),
            "tools[0].parameters",
        ),
    ],
)
async def test_schemas_that_cannot_be_followed_are_refused(
    client: Client, tools: tuple[pb.Tool, ...], param: str
) -> None:
    error = await expect_error(
        client.inference.Chat(chat(tools=tools, mode=pb.TOOL_CHOICE_MODE_REQUIRED))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await param_of(error) == param


async def test_without_strict_unenforceable_keywords_only_describe(client: Client) -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1}},
        "required": ["n"],
    }
    got = await answer(
        client.inference.Chat(chat(tools=one_tool(schema), mode=pb.TOOL_CHOICE_MODE_REQUIRED))
    )
    assert isinstance(json.loads(got.only()[0]["arguments"])["n"], int)


async def test_a_structured_output_schema_keyword_that_cannot_be_enforced_is_refused(
    client: Client,
) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 9}}}
    request = chat(tools=(), json_schema=json.dumps(schema))
    error = await expect_error(client.inference.Chat(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await param_of(error) == "sampling.json_schema"
    assert "maximum" in (error.details() or "")
