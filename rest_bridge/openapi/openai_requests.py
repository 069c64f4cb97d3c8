"""JSON Schemas of OpenAI request bodies, from the bridge's own tables and the contract's limits."""

from __future__ import annotations

from minerva.v1.limits import (
    LOGIT_BIAS_LIMIT,
    MAX_CHOICES,
    MAX_CONSTRAINT_BYTES,
    MAX_EMBED_INPUTS,
    MAX_STOP_CHARS,
    MAX_STOPS,
    MAX_TOOLS,
    MAX_TOP_K,
    MAX_TOP_LOGPROBS,
    MIN_TOP_K,
    SAMPLING_RANGES,
)

from rest_bridge.openapi.schema import (
    ANY_OBJECT,
    BOOLEAN,
    INT32_MAX,
    NULL,
    UINT32_MAX,
    Schema,
    array,
    described,
    in_range,
    integer,
    needs_logprobs,
    nullable,
    number,
    obj,
    ref,
    string,
)
from rest_bridge.protocol import CHAT_ROLES, ENCODING_FORMATS, MAX_COMPLETION_LOGPROBS
from rest_bridge.seed import INT64_MAX, INT64_MIN
from rest_bridge.unsupported import HARMLESS_FIELDS, REFUSED_FIELDS, Refusal

TEXT_PART = obj({"type": {"const": "text"}, "text": string()}, ("type", "text"))
CONTENT: Schema = {"anyOf": [string(), array(TEXT_PART, minItems=1)]}

TOOL = obj(
    {
        "type": {"const": "function"},
        "function": obj(
            {
                "name": string(minLength=1),
                "description": nullable(string()),
                "parameters": nullable(described("A JSON Schema object.", ANY_OBJECT)),
                "strict": nullable(BOOLEAN),
            },
            ("name",),
        ),
    },
    ("function",),
)
TOOL_CHOICE: Schema = {
    "anyOf": [
        {"enum": ["none", "auto", "required"]},
        obj(
            {
                "type": {"const": "function"},
                "function": obj({"name": string(minLength=1)}, ("name",)),
            },
            ("type", "function"),
        ),
        NULL,
    ]
}
HISTORY_CALL = obj(
    {
        "id": nullable(string()),
        "type": string(),
        "function": obj(
            {
                "name": string(minLength=1),
                "arguments": described(
                    "JSON text (an object is accepted too).", {"anyOf": [string(), ANY_OBJECT]}
                ),
            },
            ("name",),
        ),
    },
    ("function",),
)
_MESSAGE_FIELDS: dict[str, Schema] = {
    "name": nullable(string()),
    "tool_calls": nullable(array(HISTORY_CALL)),
    "tool_call_id": nullable(string()),
}
CHAT_MESSAGE: Schema = {
    "anyOf": [
        obj(
            {"role": {"enum": sorted(set(CHAT_ROLES) - {"assistant"})}, "content": CONTENT}
            | _MESSAGE_FIELDS,
            ("role", "content"),
        ),
        obj(
            {"role": {"const": "assistant"}, "content": nullable(CONTENT)} | _MESSAGE_FIELDS,
            ("role",),
            description="An assistant turn that only called tools may have no content.",
        ),
    ]
}
TOOL_FIELDS: dict[str, Schema] = {
    "tools": nullable(array(ref("Tool"), maxItems=MAX_TOOLS)),
    "tool_choice": TOOL_CHOICE,
    "parallel_tool_calls": nullable(BOOLEAN),
}

STOP_STRING = string(minLength=1, maxLength=MAX_STOP_CHARS)
RESPONSE_FORMAT: Schema = {
    "anyOf": [
        obj({"type": {"enum": ["text", "json_object"]}}, ("type",)),
        obj(
            {
                "type": {"const": "json_schema"},
                "json_schema": obj(
                    {
                        "name": nullable(string()),
                        "description": nullable(string()),
                        "strict": nullable(BOOLEAN),
                        "schema": described("The JSON Schema the answer follows.", ANY_OBJECT),
                    },
                    ("schema",),
                ),
            },
            ("type", "json_schema"),
        ),
        NULL,
    ],
    "description": f"Structured output; its schema is at most {MAX_CONSTRAINT_BYTES} bytes "
    "of JSON. Not with `grammar`.",
}


def _sampling() -> dict[str, Schema]:
    """The sampling fields chat and completions share (their `logprobs` differ)."""
    ranges = {key: nullable(in_range(bounds)) for key, bounds in SAMPLING_RANGES.items()}
    return {
        **ranges,
        "top_k": nullable(integer(MIN_TOP_K, MAX_TOP_K)),
        "seed": nullable(integer(INT64_MIN, INT64_MAX)),
        "n": nullable(described("At most the model's slots.", integer(1, MAX_CHOICES))),
        "stop": {"anyOf": [STOP_STRING, array(STOP_STRING, maxItems=MAX_STOPS), NULL]},
        "max_tokens": nullable(integer(1, UINT32_MAX)),
        "logit_bias": nullable(
            obj(
                {},
                propertyNames=string(pattern="^[0-9]{1,9}$"),
                additionalProperties=number(-LOGIT_BIAS_LIMIT, LOGIT_BIAS_LIMIT),
                description="Token id -> bias added to its logit.",
            )
        ),
        "response_format": RESPONSE_FORMAT,
        "grammar": nullable(
            described(
                "A GBNF grammar (llama.cpp); not with a JSON response_format.",
                string(maxLength=MAX_CONSTRAINT_BYTES),
            )
        ),
        "stream": nullable(BOOLEAN),
        "stream_options": nullable(obj({"include_usage": nullable(BOOLEAN)})),
    }


def _ignored() -> dict[str, Schema]:
    return {name: {"description": "Accepted and ignored."} for name in sorted(HARMLESS_FIELDS)}


def refused_text(refused: dict[str, Refusal]) -> str:
    """The operation's note on fields that are a 400 `unsupported_parameter` when they ask for
    something (straight from the table that refuses them)."""
    lines = [f"- `{name}`: {refusal.reason}" for name, refusal in refused.items()]
    return "Refused with 400 `unsupported_parameter` when set:\n" + "\n".join(lines)


CHAT_REQUEST = needs_logprobs(
    obj(
        {
            "model": string(minLength=1),
            "messages": array(ref("ChatMessage"), minItems=1),
            **_sampling(),
            "max_completion_tokens": nullable(
                described("Wins over max_tokens.", integer(1, UINT32_MAX))
            ),
            "logprobs": nullable(BOOLEAN),
            "top_logprobs": nullable(
                described("Needs logprobs true.", integer(0, MAX_TOP_LOGPROBS))
            ),
            **TOOL_FIELDS,
            **_ignored(),
        },
        ("model", "messages"),
    )
)
TOKEN_IDS = array(integer(0, INT32_MAX), minItems=1)
PROMPT: Schema = {
    "anyOf": [
        string(minLength=1),
        TOKEN_IDS,
        array({"anyOf": [string(minLength=1), TOKEN_IDS]}, minItems=1, maxItems=1),
    ],
    "description": "One prompt: text or token ids, bare or as the only item of an array.",
}
COMPLETION_REQUEST = obj(
    {
        "model": string(minLength=1),
        "prompt": PROMPT,
        **_sampling(),
        "logprobs": {
            "anyOf": [integer(0, MAX_COMPLETION_LOGPROBS), {"const": False}, NULL],
            "description": "How many rivals of each token to report (turns logprobs on).",
        },
        "top_logprobs": {"enum": [0, None], "description": "A chat field: here see logprobs."},
        "echo": {"enum": [False, None], "description": "true is not supported."},
        "best_of": {"enum": [1, None], "description": "Only 1 is supported."},
        "suffix": nullable(described("Not supported: empty only.", string(maxLength=0))),
        **_ignored(),
    },
    ("model", "prompt"),
)
EMBED_INPUT: Schema = {
    "anyOf": [
        string(minLength=1),
        TOKEN_IDS,
        array({"anyOf": [string(minLength=1), TOKEN_IDS]}, minItems=1, maxItems=MAX_EMBED_INPUTS),
    ]
}
EMBEDDING_REQUEST = obj(
    {
        "model": string(minLength=1),
        "input": EMBED_INPUT,
        "encoding_format": nullable({"enum": list(ENCODING_FORMATS)}),
        "dimensions": described("Not supported: vectors have the model's size.", NULL),
        "user": {"description": "Accepted and ignored."},
    },
    ("model", "input"),
)

REFUSED_ON_CHAT = refused_text(REFUSED_FIELDS)
