"""Structured output through the real core: JSON Schema and GBNF constraints, and bad ones."""

from __future__ import annotations

import json

import grpc
import pytest
from minerva.v1 import inference_pb2 as pb

from tests.conftest import DEFAULT_MODEL_ID
from tests.core.conftest import Client
from tests.core.test_generation import collect, text_of
from tests.core.test_validation import expect_error, param_of

pytestmark = pytest.mark.asyncio(loop_scope="session")

CITY = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["name", "population"],
    "additionalProperties": False,
}
ASK = [pb.ChatMessage(role="user", content="Describe Paris as JSON with its population.")]


def chat(**sampling: object) -> pb.ChatRequest:
    params = pb.SamplingParams(**{"temperature": 0.0, "max_tokens": 80, **sampling})  # type: ignore[arg-type]
    return pb.ChatRequest(model_id=DEFAULT_MODEL_ID, messages=ASK, sampling=params)


async def test_json_schema_output_parses_and_follows_the_schema(client: Client) -> None:
    chunks, final = await collect(client.inference.Chat(chat(json_schema=json.dumps(CITY))))
    value = json.loads(text_of(chunks))
    assert set(value) == {"name", "population"}
    assert isinstance(value["name"], str) and isinstance(value["population"], int)
    assert final.finish_reason == pb.FINISH_REASON_STOP


async def test_any_json_object(client: Client) -> None:
    request = chat(json_schema='{"type": "object"}', max_tokens=200)
    del request.messages[:]
    request.messages.append(pb.ChatMessage(role="user", content='Reply with {"answer": "yes"}'))
    chunks, final = await collect(client.inference.Chat(request))
    assert final.finish_reason == pb.FINISH_REASON_STOP, text_of(chunks)
    assert isinstance(json.loads(text_of(chunks)), dict)


async def test_a_gbnf_grammar_is_followed(client: Client) -> None:
    grammar = 'root ::= ("yes" | "no") "."'
    chunks, final = await collect(client.inference.Chat(chat(grammar=grammar)))
    assert text_of(chunks) in ("yes.", "no.")
    assert final.finish_reason == pb.FINISH_REASON_STOP


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("grammar", "root ::= ("),
        ("grammar", 'start ::= "x"'),  # no root rule
        ("grammar", "x" * (64 * 1024 + 1)),
        ("json_schema", "{not json"),
        ("json_schema", "[1, 2]"),
        # Each of these would crash, hang or exhaust the process inside llama.cpp or the converter.
        ("grammar", "root ::= " + "(" * 200 + '"x"' + ")" * 200),  # parser stack
        ("grammar", 'root ::= "a" !<[0]>'),  # token syntax: throws through the C API
        ("grammar", 'root ::= "a"\0junk'),
        (
            "grammar",
            'root ::= "x"{0,1999} "y"{0,1999} "z"{0,1999} "w"{0,1999} "v"{0,1999} "u"{0,1999}',
        ),
        ("grammar", "root ::= " + "a" * 200 + "\n" + "a" * 200 + ' ::= "x"'),
        ("json_schema", '{"type": "string", "maxLength": 20000}'),
        ("json_schema", '{"type": "array", "items": {"type": "integer"}, "minItems": 3000000}'),
        ("json_schema", '{"type": "string", "pattern": "^a{0,100000}$"}'),
        ("json_schema", '{"$ref": "https://example.invalid/schema.json"}'),
        ("json_schema", '{"$ref": "#/nope"}'),
        ("json_schema", '{"type": ["string", 5]}'),
        ("json_schema", "[" * 5000),
    ],
)
async def test_a_constraint_that_does_not_compile_is_invalid_argument(
    client: Client, field: str, value: str
) -> None:
    error = await expect_error(client.inference.Chat(chat(**{field: value})))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await param_of(error) == f"sampling.{field}"
    # The model keeps serving.
    _, final = await collect(client.inference.Chat(chat(max_tokens=2)))
    assert final.usage.completion_tokens >= 1


async def test_a_finished_grammar_with_end_of_generation_banned_ends_the_answer(
    client: Client,
) -> None:
    # Once "yes" is out the grammar allows only end-of-generation, which the bias bans: llama.cpp
    # would abort the process if the grammar were made to accept anything else.
    request = chat(grammar='root ::= "yes"', logit_bias={0: -100.0, 1: -100.0, 2: -100.0})
    chunks, final = await collect(client.inference.Chat(request))
    assert text_of(chunks) == "yes"
    assert final.finish_reason == pb.FINISH_REASON_STOP
    assert final.usage.completion_tokens == len([t for c in chunks for t in c.token_ids])
