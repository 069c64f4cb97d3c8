"""Structured output (response_format, llama.cpp's grammar) through both processes with the SDK."""

from __future__ import annotations

import json

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema

from tests.e2e.conftest import MODEL

pytestmark = pytest.mark.e2e

PARIS: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the capital of France, and how many people live there?"}
]
CITY_FORMAT: ResponseFormatJSONSchema = {
    "type": "json_schema",
    "json_schema": {
        "name": "city",
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "population": {"type": "integer"}},
            "required": ["name", "population"],
            "additionalProperties": False,
        },
    },
}


def test_json_schema_answer_has_exactly_its_keys(own_client: openai.OpenAI) -> None:
    reply = own_client.chat.completions.create(
        model=MODEL,
        messages=PARIS,
        response_format=CITY_FORMAT,
        temperature=0,
        max_tokens=60,
    )
    choice = reply.choices[0]
    city = json.loads(choice.message.content or "")
    assert set(city) == {"name", "population"}, city
    assert isinstance(city["name"], str)
    assert isinstance(city["population"], int) and not isinstance(city["population"], bool)
    assert choice.finish_reason == "stop"


def test_json_object_answer_is_an_object(own_client: openai.OpenAI) -> None:
    reply = own_client.chat.completions.create(
        model=MODEL,
        messages=PARIS,
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=60,
    )
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)


def test_grammar_limits_a_completion_to_its_words(own_client: openai.OpenAI) -> None:
    reply = own_client.completions.create(
        model=MODEL,
        prompt="Is Paris in France? Answer:",
        temperature=0,
        max_tokens=8,
        extra_body={"grammar": 'root ::= " yes" | " no"'},
    )
    assert reply.choices[0].text in (" yes", " no")
    assert reply.choices[0].finish_reason == "stop"


def test_grammar_the_core_cannot_compile_is_400_on_grammar(own_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        own_client.completions.create(
            model=MODEL, prompt="Hi", max_tokens=4, extra_body={"grammar": "root ::= ("}
        )
    assert caught.value.status_code == 400
    assert caught.value.body["param"] == "grammar"  # type: ignore[index]


NESTED_FORMAT: ResponseFormatJSONSchema = {
    "type": "json_schema",
    "json_schema": {
        "name": "trip",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "city": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "maxLength": 30},
                        "country": {"type": "string", "maxLength": 30},
                    },
                    "required": ["name", "country"],
                    "additionalProperties": False,
                },
                "sights": {
                    "type": "array",
                    "items": {"type": "string", "maxLength": 40},
                    "minItems": 1,
                    "maxItems": 3,
                },
            },
            "required": ["city", "sights"],
            "additionalProperties": False,
        },
    },
}


def test_json_schema_with_nested_objects_and_arrays(own_client: openai.OpenAI) -> None:
    reply = own_client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Plan a day in Paris: the city and three sights."}],
        response_format=NESTED_FORMAT,
        temperature=0,
        max_tokens=150,
    )
    assert reply.choices[0].finish_reason == "stop"
    trip = json.loads(reply.choices[0].message.content or "")
    assert set(trip) == {"city", "sights"}
    assert set(trip["city"]) == {"name", "country"}
    assert all(isinstance(v, str) for v in trip["city"].values())
    assert 1 <= len(trip["sights"]) <= 3 and all(isinstance(s, str) for s in trip["sights"])


def test_response_format_on_completions(own_client: openai.OpenAI) -> None:
    reply = own_client.completions.create(
        model=MODEL,
        prompt="A JSON object describing a cat:",
        temperature=0,
        max_tokens=60,
        extra_body={"response_format": {"type": "json_schema", "json_schema": CAT}},
    )
    assert reply.choices[0].finish_reason == "stop"
    cat = json.loads(reply.choices[0].text)
    assert set(cat) == {"name", "age"} and isinstance(cat["age"], int)


CAT = {
    "name": "cat",
    "schema": {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    },
}
