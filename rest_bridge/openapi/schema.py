"""Building blocks of the OpenAPI document: JSON Schema helpers, error envelopes and responses."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from minerva.v1.limits import INT32_MAX, Range

from rest_bridge.errors import STATUS_TABLE
from rest_bridge.ollama.errors import STATUS_TABLE as OLLAMA_STATUS_TABLE
from rest_bridge.protocol import UINT32_MAX

__all__ = ["INT32_MAX", "UINT32_MAX"]  # re-exported for the schemas

Schema = dict[str, Any]

BOOLEAN: Schema = {"type": "boolean"}
NULL: Schema = {"type": "null"}
ANY_OBJECT: Schema = {"type": "object"}

# Every route may answer these: the bridge's catch-all 500, and 503 while it drains on shutdown.
# (401 and 429 are added per route from the auth and rate-limit exemptions: see gates.)
ALWAYS = (500, 503)
# A request body that is not a JSON object, or is too large (--max-body-mb).
WITH_BODY = (400, 413)
# What the core's gRPC status codes become, from the bridge's one table per dialect.
CORE = tuple(sorted({row.status for row in STATUS_TABLE.values()} | {500}))
OLLAMA_CORE = tuple(sorted({*OLLAMA_STATUS_TABLE.values(), 500}))
_REASONS = {
    413: "Payload Too Large: the body is over the bridge's --max-body-mb",
    429: "Too Many Requests: over the caller's rate limit, or the model's queue is full",
    499: "Client Closed Request: the core cancelled the call",
    503: "Service Unavailable: the core is unreachable, or the bridge is shutting down",
}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """Optional fields also take null, which the bridge reads as absent."""
    return {"anyOf": [schema, NULL]}


def obj(properties: dict[str, Schema], required: tuple[str, ...] = (), **extra: Any) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return {**schema, **extra}


def array(items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "items": items, **extra}


def string(**extra: Any) -> Schema:
    return {"type": "string", **extra}


def integer(low: int | None = None, high: int | None = None, **extra: Any) -> Schema:
    return _bounded("integer", low, high, extra)


def number(low: float | None = None, high: float | None = None, **extra: Any) -> Schema:
    return _bounded("number", low, high, extra)


def _bounded(kind: str, low: float | None, high: float | None, extra: dict[str, Any]) -> Schema:
    schema: Schema = {"type": kind, **extra}
    if low is not None:
        schema["minimum"] = low
    if high is not None:
        schema["maximum"] = high
    return schema


def in_range(bounds: Range) -> Schema:
    """A number in one of the contract's ranges, as the 32-bit float the core reads."""
    low = "exclusiveMinimum" if bounds.low_open else "minimum"
    text = "Read as a 32-bit float: a value that rounds out of range is refused."
    return {"type": "number", low: bounds.low, "maximum": bounds.high, "description": text}


def needs_logprobs(schema: Schema) -> Schema:
    """A request object where top_logprobs above 0 needs logprobs true (else a 400)."""
    positive = {"properties": {"top_logprobs": {"type": "number", "exclusiveMinimum": 0}}}
    return {
        **schema,
        "if": {**positive, "required": ["top_logprobs"]},
        "then": {"properties": {"logprobs": {"const": True}}, "required": ["logprobs"]},
    }


def described(text: str, schema: Schema) -> Schema:
    return {"description": text, **schema}


OPENAI_ERROR = obj(
    {
        "error": obj(
            {
                "message": string(),
                "type": string(),
                "param": nullable(string()),
                "code": nullable(string()),
            },
            ("message", "type", "param", "code"),
        )
    },
    ("error",),
    description="OpenAI's error envelope; `param` names the request field at fault.",
)
OLLAMA_ERROR = obj({"error": string()}, ("error",), description="Ollama's error object.")

REQUEST_ID_HEADER: Schema = {
    "description": "The client's x-request-id when it is 1..128 of [A-Za-z0-9._:-], else a "
    "new one; the core logs it too.",
    "required": True,
    "schema": string(minLength=1),
}
RETRY_AFTER_HEADER: Schema = {
    "description": "Seconds to wait before retrying.",
    "required": True,
    "schema": string(pattern="^[0-9]+$"),
}


def headers(status: int = 200) -> dict[str, Schema]:
    """Response headers: the request id always, Retry-After on 429 and 503 errors."""
    found = {"x-request-id": REQUEST_ID_HEADER}
    if status in (429, 503):
        found["Retry-After"] = RETRY_AFTER_HEADER
    return found


def reason(status: int) -> str:
    return _REASONS.get(status) or HTTPStatus(status).phrase


def content(media: dict[str, Schema]) -> dict[str, Any]:
    return {media_type: {"schema": schema} for media_type, schema in media.items()}


def response(description: str, media: dict[str, Schema], status: int = 200) -> dict[str, Any]:
    return {"description": description, "headers": headers(status), "content": content(media)}


def json_response(description: str, schema: Schema) -> dict[str, Any]:
    return response(description, {"application/json": schema})


def _error_name(status: int, ollama: bool) -> str:
    return f"{'Ollama' if ollama else 'OpenAI'}Error{status}"


def errors(*groups: tuple[int, ...], ollama: bool = False) -> dict[str, Any]:
    """Error responses for every status in `groups`, in the route's dialect."""
    statuses = sorted({status for group in groups for status in group})
    return {
        str(status): {"$ref": f"#/components/responses/{_error_name(status, ollama)}"}
        for status in statuses
    }


def error_responses(statuses: set[int]) -> dict[str, Any]:
    """components.responses: each error status in both dialects' envelopes."""
    found = {}
    for ollama in (False, True):
        envelope = ref("OllamaError" if ollama else "OpenAIError")
        for status in sorted(statuses):
            media = {"application/json": envelope}
            found[_error_name(status, ollama)] = response(reason(status), media, status)
    return found


def json_body(schema: Schema) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def operation(
    summary: str,
    responses: dict[str, Any],
    *,
    body: Schema | None = None,
    description: str | None = None,
    parameters: list[dict[str, Any]] | None = None,
    tags: tuple[str, ...] = (),
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": list(tags), "responses": responses}
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = json_body(body)
    return op
