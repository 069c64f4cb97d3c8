"""JSON Schemas of Ollama's request bodies and answers, from the bridge's tables and limits."""

from __future__ import annotations

from minerva.v1.limits import MAX_TOP_K, MAX_TOP_LOGPROBS, MIN_TOP_K, SAMPLING_RANGES

from rest_bridge.ollama.requests import FIXED_OPTIONS, NO_EFFECT_OPTIONS
from rest_bridge.ollama.responses import DONE_REASONS
from rest_bridge.openapi.openai_requests import CONTENT
from rest_bridge.openapi.schema import (
    ANY_OBJECT,
    BOOLEAN,
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
from rest_bridge.seed import INT64_MAX, INT64_MIN

_SECONDS = r"([0-9]+(\.[0-9]*)?|\.[0-9]+)"
KEEP_ALIVE: Schema = {
    "anyOf": [
        number(),
        string(pattern=rf"^[+-]?({_SECONDS}|({_SECONDS}(ns|us|µs|ms|s|m|h))+)$"),
        NULL,
    ],
    "description": "Seconds, or a Go duration ('5m', '1h30m'); negative keeps the model loaded, "
    "0 unloads it after this request.",
}
NO_IMAGES = described("Not supported: empty only.", {"type": ["array", "null"], "maxItems": 0})
NOT_THINKING = {"enum": [False, None], "description": "No model served here thinks."}
FORMAT: Schema = {
    "anyOf": [{"enum": ["", "json"]}, described("A JSON Schema.", ANY_OBJECT), NULL],
    "description": "Constrains the answer to JSON ('json') or to a JSON Schema.",
}
_STOP = string(minLength=1)
OPTIONS = nullable(
    obj(
        {
            **{key: nullable(in_range(bounds)) for key, bounds in SAMPLING_RANGES.items()},
            "num_predict": nullable(
                described(
                    "Most tokens to generate; -1 or -2 for no limit.",
                    {"anyOf": [integer(-2, -1), integer(1, UINT32_MAX)]},
                )
            ),
            "top_k": nullable(integer(MIN_TOP_K, MAX_TOP_K)),
            "seed": nullable(described("-1 is a random seed.", integer(INT64_MIN, INT64_MAX))),
            "stop": {"anyOf": [_STOP, array(_STOP), NULL]},
            "num_ctx": nullable(integer(1, UINT32_MAX)),
            "num_thread": nullable(
                described(
                    "CPU threads the model computes with from this request on, at most the "
                    "server's configured count; 0 is the default (unset). Needs an admin key "
                    "when the server has admin keys.",
                    integer(0, UINT32_MAX),
                )
            ),
            **{key: {"enum": [only, None]} for key, only in FIXED_OPTIONS.items()},
            **{key: {"description": "Accepted; no effect."} for key in sorted(NO_EFFECT_OPTIONS)},
        }
    )
)
MODEL_NAME = described(
    "The model (or its older name, `name`); ':latest' may follow.", string(minLength=1)
)
_COMMON: dict[str, Schema] = {
    "model": MODEL_NAME,
    "options": ref("OllamaOptions"),
    "format": FORMAT,
    "keep_alive": KEEP_ALIVE,
    "think": NOT_THINKING,
    "stream": nullable(described("false: one JSON object instead of NDJSON.", BOOLEAN)),
    "logprobs": nullable(BOOLEAN),
    "top_logprobs": nullable(described("Needs logprobs true.", integer(0, MAX_TOP_LOGPROBS))),
}
OLLAMA_CALL = obj(
    {
        "id": {},
        "function": obj(
            {"name": string(), "arguments": {"anyOf": [ANY_OBJECT, string(), NULL]}},
            ("name",),
        ),
    },
    ("function",),
)
OLLAMA_MESSAGE = obj(
    {
        "role": {"enum": ["system", "user", "assistant", "tool"]},
        "content": nullable(CONTENT),
        "images": NO_IMAGES,
        "tool_calls": nullable(array(OLLAMA_CALL)),
        "tool_name": nullable(string()),
    },
    ("role",),
)
CHAT_REQUEST = needs_logprobs(
    obj(
        {
            **_COMMON,
            "messages": nullable(
                described(
                    "None: only loads (keep_alive 0: unloads) the model.",
                    array(ref("OllamaMessage")),
                )
            ),
            "tools": nullable(array(ref("Tool"))),
        },
        ("model",),
    )
)
GENERATE_REQUEST = needs_logprobs(
    obj(
        {
            **_COMMON,
            "prompt": nullable(described("Empty: only loads (or unloads) the model.", string())),
            "system": nullable(string()),
            "raw": nullable(described("true: the prompt as written, no template.", BOOLEAN)),
            "suffix": nullable(described("Not supported: empty only.", string(maxLength=0))),
            "template": nullable(described("Not supported: empty only.", string(maxLength=0))),
            "context": NO_IMAGES | {"description": "Not supported: empty only."},
            "images": NO_IMAGES,
        },
        ("model",),
    )
)
EMBED_REQUEST = obj(
    {
        "model": MODEL_NAME,
        "input": {"anyOf": [string(), array(string(minLength=1)), NULL]},
        "truncate": nullable(BOOLEAN),
        "dimensions": described("Not supported.", NULL),
        "keep_alive": KEEP_ALIVE,
        "options": {"description": "Accepted; no effect on embeddings."},
    },
    ("model",),
)
EMBEDDINGS_REQUEST = obj(
    {"model": MODEL_NAME, "prompt": nullable(string()), "keep_alive": KEEP_ALIVE},
    ("model",),
)
SHOW_REQUEST = obj({"model": MODEL_NAME, "verbose": nullable(BOOLEAN)}, ("model",))

_NS = integer(0, description="nanoseconds")
_DONE_FIELDS = {
    "done_reason": {"enum": sorted({*DONE_REASONS.values(), "load", "unload"})},
    "total_duration": _NS,
    "load_duration": _NS,
    "prompt_eval_count": integer(0),
    "prompt_eval_duration": _NS,
    "eval_count": integer(0),
    "eval_duration": _NS,
}
_TOKEN = obj({"token": string(), "logprob": number(), "bytes": array(integer(0, 255))})
_PIECE = {
    "model": string(),
    "created_at": string(format="date-time"),
    "done": BOOLEAN,
    "logprobs": array(_TOKEN),
    **_DONE_FIELDS,
}
CHAT_PIECE = obj(
    {
        **_PIECE,
        "message": obj(
            {
                "role": {"const": "assistant"},
                "content": string(),
                "tool_calls": array(
                    obj(
                        {"function": obj({"name": string(), "arguments": {}}, ("name",))},
                        ("function",),
                    )
                ),
            },
            ("role", "content"),
        ),
    },
    ("model", "created_at", "message", "done"),
)
GENERATE_PIECE = obj({**_PIECE, "response": string()}, ("model", "created_at", "response", "done"))
DETAILS = obj(
    {
        "parent_model": string(),
        "format": string(),
        "family": string(),
        "families": nullable(array(string())),
        "parameter_size": string(),
        "quantization_level": string(),
    },
    ("format", "family", "parameter_size", "quantization_level"),
)
_LISTED = {
    "name": string(),
    "model": string(),
    "size": integer(0),
    "digest": string(pattern="^[0-9a-f]{64}$"),
    "details": ref("OllamaDetails"),
}
TAGS = obj(
    {"models": array(obj({**_LISTED, "modified_at": string()}, (*_LISTED, "modified_at")))},
    ("models",),
)
_RUNNING = {"expires_at": string(), "size_vram": integer(0), "context_length": integer(0)}
PS = obj(
    {"models": array(obj({**_LISTED, **_RUNNING}, (*_LISTED, *_RUNNING)))},
    ("models",),
)
SHOW = obj(
    {
        "license": string(),
        "modelfile": string(),
        "parameters": string(),
        "template": string(),
        "details": ref("OllamaDetails"),
        "model_info": ANY_OBJECT,
        "capabilities": array(string()),
        "modified_at": string(),
    },
    ("modelfile", "template", "details", "model_info", "capabilities"),
)
EMBED = obj(
    {
        "model": string(),
        "embeddings": array(array(number())),
        "total_duration": _NS,
        "load_duration": _NS,
        "prompt_eval_count": integer(0),
    },
    ("model", "embeddings"),
)
EMBEDDINGS = obj({"embedding": array(number())}, ("embedding",))
VERSION = obj({"version": string()}, ("version",))
SCHEMAS: dict[str, Schema] = {
    "OllamaOptions": OPTIONS,
    "OllamaMessage": OLLAMA_MESSAGE,
    "OllamaChatPiece": CHAT_PIECE,
    "OllamaGeneratePiece": GENERATE_PIECE,
    "OllamaDetails": DETAILS,
}
