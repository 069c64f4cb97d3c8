"""The OpenAI, llama-server and service routes as OpenAPI path items."""

from __future__ import annotations

from typing import Any

from minerva.v1.limits import MAX_SESSION_CHARS

from rest_bridge.models import LIST_FORMATS
from rest_bridge.openapi import openai_requests as req
from rest_bridge.openapi.openai_objects import sse_events
from rest_bridge.openapi.schema import (
    ALWAYS,
    BOOLEAN,
    CORE,
    INT32_MAX,
    REQUEST_ID_HEADER,
    WITH_BODY,
    Schema,
    array,
    errors,
    integer,
    json_response,
    nullable,
    obj,
    operation,
    ref,
    response,
    string,
)
from rest_bridge.protocol import SESSION_HEADER
from rest_bridge.unsupported import COMPLETION_REFUSED_FIELDS

OPENAI = ("OpenAI",)
LLAMA = ("llama-server",)
SERVICE = ("Service",)
SESSION_PARAMETER = {
    "name": SESSION_HEADER,
    "in": "header",
    "required": False,
    "description": "Names the conversation, so that the core keeps its cache slot.",
    "schema": string(maxLength=MAX_SESSION_CHARS),
}
_STREAMED = (
    "With `stream: true`, server-sent events: nothing is sent before the core's first message "
    "(early failures keep their status); a failure after that is an error event."
)


def _generation(summary: str, body: str, answer: str, chunk: str, refused: str) -> dict[str, Any]:
    ok = response(
        "The answer, whole or as server-sent events.",
        {"application/json": ref(answer), "text/event-stream": sse_events(chunk)},
    )
    return operation(
        summary,
        {"200": ok, **errors(ALWAYS, WITH_BODY, CORE)},
        body=ref(body),
        description=f"{_STREAMED}\n\n{refused}",
        parameters=[SESSION_PARAMETER],
        tags=OPENAI,
    )


def _model_parameter(body: Schema) -> Schema:
    """llama-server's bodies name no model: without one, the core's only model is used."""
    return {**body, "properties": {"model": nullable(string()), **body["properties"]}}


TOKENIZE_REQUEST = _model_parameter(
    obj(
        {
            "content": string(),
            "add_special": nullable(BOOLEAN),
            "parse_special": nullable(BOOLEAN),
            "with_pieces": nullable(BOOLEAN),
        },
        ("content",),
    )
)
DETOKENIZE_REQUEST = _model_parameter(obj({"tokens": array(integer(0, INT32_MAX))}, ("tokens",)))
TEMPLATE_REQUEST = _model_parameter(
    obj({"messages": array(ref("ChatMessage"), minItems=1), **req.TOOL_FIELDS}, ("messages",))
)


def _utility(summary: str, body: Schema, answer: Schema) -> dict[str, Any]:
    return {
        "post": operation(
            summary,
            {"200": json_response(summary, answer), **errors(ALWAYS, WITH_BODY, CORE)},
            body=body,
            tags=LLAMA,
        )
    }


def paths() -> dict[str, Any]:
    return {
        "/v1/models": {
            "get": operation(
                "The models in the core's registry",
                {
                    "200": response(
                        "OpenAI's model list, or (format=compact) one line per model",
                        {"application/json": ref("ModelList"), "text/plain": string()},
                    ),
                    **errors(ALWAYS, (400,), CORE),
                },
                parameters=[
                    {
                        "name": "format",
                        "in": "query",
                        "required": False,
                        "schema": {"enum": list(LIST_FORMATS)},
                    }
                ],
                tags=OPENAI,
            )
        },
        "/v1/models/{model_id}": {
            "get": operation(
                "One model",
                {"200": json_response("The model", ref("Model")), **errors(ALWAYS, CORE)},
                parameters=[
                    {"name": "model_id", "in": "path", "required": True, "schema": string()}
                ],
                tags=OPENAI,
            )
        },
        "/v1/chat/completions": {
            "post": _generation(
                "Chat completion (the model's chat template applied by the core)",
                "ChatCompletionRequest",
                "ChatCompletion",
                "ChatCompletionChunk",
                req.REFUSED_ON_CHAT,
            )
        },
        "/v1/completions": {
            "post": _generation(
                "Completion of a raw prompt (no template)",
                "CompletionRequest",
                "Completion",
                "CompletionChunk",
                req.refused_text(COMPLETION_REFUSED_FIELDS),
            )
        },
        "/v1/embeddings": {
            "post": operation(
                "Embeddings",
                {
                    "200": json_response("The vectors", ref("EmbeddingList")),
                    **errors(ALWAYS, WITH_BODY, CORE),
                },
                body=ref("EmbeddingRequest"),
                tags=OPENAI,
            )
        },
        "/tokenize": _utility("Text -> token ids", TOKENIZE_REQUEST, ref("Tokens")),
        "/detokenize": _utility(
            "Token ids -> text", DETOKENIZE_REQUEST, obj({"content": string()}, ("content",))
        ),
        "/apply-template": _utility(
            "A chat body -> the prompt the model would read",
            TEMPLATE_REQUEST,
            obj({"prompt": string()}, ("prompt",)),
        ),
        **service_paths(),
    }


def service_paths() -> dict[str, Any]:
    health = response("The core answers SERVING", {"application/json": ref("Health")})
    down = {
        "description": "The core is not SERVING (or the bridge is shutting down)",
        "headers": {"x-request-id": REQUEST_ID_HEADER},
        "content": {"application/json": {"schema": {"anyOf": [ref("Health"), ref("OpenAIError")]}}},
    }
    return {
        "/health": {
            "get": operation(
                "Health: 200 only while the core is SERVING",
                {**errors(ALWAYS), "200": health, "503": down},
                tags=SERVICE,
            )
        },
        "/metrics": {
            "get": operation(
                "Prometheus metrics of the bridge and of the core's models",
                {
                    "200": response("Prometheus text format 0.0.4", {"text/plain": string()}),
                    **errors(ALWAYS),
                },
                tags=SERVICE,
            )
        },
        "/openapi.json": {
            "get": operation(
                "This document",
                {
                    "200": json_response("The OpenAPI document", {"type": "object"}),
                    **errors(ALWAYS),
                },
                tags=SERVICE,
            )
        },
    }
