"""JSON Schemas of what the OpenAI routes answer: completions, stream chunks, models, embeddings."""

from __future__ import annotations

from rest_bridge.openapi.schema import (
    BOOLEAN,
    NULL,
    Schema,
    array,
    integer,
    nullable,
    number,
    obj,
    ref,
    string,
)
from rest_bridge.translate import FINISH_REASONS

FINISH_REASON: Schema = {"enum": sorted(set(FINISH_REASONS.values()))}
COUNT = integer(0)

USAGE = obj(
    {
        "prompt_tokens": COUNT,
        "completion_tokens": COUNT,
        "total_tokens": COUNT,
        "prompt_tokens_details": obj({"cached_tokens": COUNT}, ("cached_tokens",)),
    },
    ("prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details"),
)
_TOKEN = {"token": string(), "logprob": number(), "bytes": array(integer(0, 255))}
CHAT_LOGPROBS = obj(
    {
        "content": array(
            obj(
                {**_TOKEN, "top_logprobs": array(obj(_TOKEN, tuple(_TOKEN)))},
                (*_TOKEN, "top_logprobs"),
            )
        )
    },
    ("content",),
)
COMPLETION_LOGPROBS = obj(
    {
        "tokens": array(string()),
        "token_logprobs": array(number()),
        "top_logprobs": array(obj({}, additionalProperties=number())),
        "text_offset": array(COUNT),
    },
    ("tokens", "token_logprobs", "top_logprobs", "text_offset"),
)
TOOL_CALL = obj(
    {
        "id": string(),
        "type": {"const": "function"},
        "function": obj({"name": string(), "arguments": string()}, ("name", "arguments")),
    },
    ("id", "type", "function"),
)
DELTA_CALL = obj(
    {
        "index": COUNT,
        "id": string(),
        "type": {"const": "function"},
        "function": obj({"name": string(), "arguments": string()}, ("arguments",)),
    },
    ("index", "function"),
)
_IDS = {"id": string(), "created": integer(), "model": string()}
_ENVELOPE = ("id", "object", "created", "model", "system_fingerprint", "choices")


def _answer(kind: str, choice: Schema) -> Schema:
    """A whole answer: ids, fingerprint, choices and usage."""
    properties = {
        **_IDS,
        "object": {"const": kind},
        "system_fingerprint": nullable(string()),
        "choices": array(choice),
        "usage": USAGE,
    }
    return obj(properties, (*_ENVELOPE, "usage"))


def _chunk(kind: str, choice: Schema) -> Schema:
    """A stream chunk: one choice, or (the last, with include_usage) none and the usage."""
    properties = {
        **_IDS,
        "object": {"const": kind},
        "system_fingerprint": nullable(string()),
        "choices": array(choice, maxItems=1),
        "usage": nullable(USAGE),
    }
    return obj(properties, _ENVELOPE)


CHAT_COMPLETION = _answer(
    "chat.completion",
    obj(
        {
            "index": COUNT,
            "message": obj(
                {
                    "role": {"const": "assistant"},
                    "content": nullable(string()),
                    "tool_calls": array(TOOL_CALL),
                },
                ("role", "content"),
            ),
            "logprobs": nullable(CHAT_LOGPROBS),
            "finish_reason": FINISH_REASON,
        },
        ("index", "message", "logprobs", "finish_reason"),
    ),
)
CHAT_CHUNK = _chunk(
    "chat.completion.chunk",
    obj(
        {
            "index": COUNT,
            "delta": obj(
                {
                    "role": {"const": "assistant"},
                    "content": string(),
                    "tool_calls": array(DELTA_CALL),
                }
            ),
            "logprobs": nullable(CHAT_LOGPROBS),
            "finish_reason": nullable(FINISH_REASON),
        },
        ("index", "delta", "logprobs", "finish_reason"),
    ),
)
_TEXT_CHOICE = {
    "index": COUNT,
    "text": string(),
    "logprobs": nullable(COMPLETION_LOGPROBS),
}
COMPLETION = _answer(
    "text_completion",
    obj({**_TEXT_CHOICE, "finish_reason": FINISH_REASON}, (*_TEXT_CHOICE, "finish_reason")),
)
COMPLETION_CHUNK = _chunk(
    "text_completion",
    obj(
        {**_TEXT_CHOICE, "finish_reason": nullable(FINISH_REASON)},
        (*_TEXT_CHOICE, "finish_reason"),
    ),
)


def sse_events(chunk: str) -> Schema:
    """One server-sent event's `data`: a chunk, an error after the headers, or `[DONE]`."""
    payload = {"anyOf": [ref(chunk), ref("OpenAIError")]}
    return obj(
        {
            "data": {
                "anyOf": [
                    {"const": "[DONE]"},
                    string(contentMediaType="application/json", contentSchema=payload),
                ]
            }
        },
        ("data",),
        description="Each event is `data: <JSON>`; the stream ends with `data: [DONE]`.",
    )


MODEL = obj(
    {
        "id": string(),
        "object": {"const": "model"},
        "created": integer(),
        "owned_by": string(),
        "permission": array({}),
        "root": string(),
        "parent": NULL,
        "quantization": string(),
        "file_size_mb": number(0),
        "tensor_count": COUNT,
        "minerva": obj(
            {
                "format": string(),
                "architecture": string(),
                "layer_count": COUNT,
                "embedding_length": COUNT,
                "vocab_size": COUNT,
                "context_length": COUNT,
                "parameter_count": COUNT,
                "has_chat_template": BOOLEAN,
                "context_size": COUNT,
                "load_state": string(),
                "servable": BOOLEAN,
                "fingerprint": string(),
                "error": nullable(string()),
            },
            ("format", "architecture", "load_state", "servable"),
        ),
    },
    ("id", "object", "created", "owned_by"),
)
MODEL_LIST = obj({"object": {"const": "list"}, "data": array(ref("Model"))}, ("object", "data"))
EMBEDDING_LIST = obj(
    {
        "object": {"const": "list"},
        "data": array(
            obj(
                {
                    "object": {"const": "embedding"},
                    "index": COUNT,
                    "embedding": {
                        "anyOf": [
                            array(number()),
                            string(description="base64 of little-endian float32 values"),
                        ]
                    },
                },
                ("object", "index", "embedding"),
            )
        ),
        "model": string(),
        "usage": obj({"prompt_tokens": COUNT, "total_tokens": COUNT}, ("prompt_tokens",)),
    },
    ("object", "data", "model", "usage"),
)
HEALTH = obj(
    {
        "status": {"enum": ["ok", "unavailable"]},
        "core": string(description="The core's serving status or gRPC code."),
        "message": string(),
    },
    ("status", "core"),
)
TOKENS = obj(
    {
        "tokens": array(
            {
                "anyOf": [
                    COUNT,
                    obj(
                        {
                            "id": COUNT,
                            "piece": {
                                "anyOf": [string(), array(integer(0, 255))],
                                "description": "The text, or its bytes when not whole UTF-8.",
                            },
                        },
                        ("id", "piece"),
                    ),
                ]
            }
        )
    },
    ("tokens",),
)
SCHEMAS: dict[str, Schema] = {
    "ChatCompletion": CHAT_COMPLETION,
    "ChatCompletionChunk": CHAT_CHUNK,
    "Completion": COMPLETION,
    "CompletionChunk": COMPLETION_CHUNK,
    "Model": MODEL,
    "ModelList": MODEL_LIST,
    "EmbeddingList": EMBEDDING_LIST,
    "Health": HEALTH,
    "Tokens": TOKENS,
}
