"""Pure validation of OpenAI request bodies into protobuf requests; every error names its param."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from minerva.v1 import inference_pb2
from minerva.v1.limits import (
    MAX_SESSION_CHARS,
    MAX_STOP_CHARS,
    MAX_STOPS,
    MAX_TOP_K,
    MAX_TOP_LOGPROBS,
    MIN_TOP_K,
    SAMPLING_RANGES,
)

from rest_bridge.errors import BadRequest
from rest_bridge.fields import get_bool, get_int, get_number, get_str, type_name
from rest_bridge.seed import INT64_MAX, INT64_MIN, core_seed
from rest_bridge.structured import constraint
from rest_bridge.tools import message_tool_fields, tool_fields
from rest_bridge.unsupported import COMPLETION_REFUSED_FIELDS, KNOWN_FIELDS, refuse_unsupported

log = logging.getLogger(__name__)

# The legacy completions API's own bound on its `logprobs` count (chat's is the contract's).
MAX_COMPLETION_LOGPROBS = 5
INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1
CHAT_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}

# Fields read here, or (unsupported.KNOWN_FIELDS) refused or harmless; others are logged at debug.
_SAMPLING_FIELDS = {
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "stop",
    "max_tokens",
    "logit_bias",
    "n",
    "logprobs",
    "top_logprobs",
    "response_format",
    "grammar",
    "stream",
    "stream_options",
}
_COMMON_FIELDS = {"model", *_SAMPLING_FIELDS, *KNOWN_FIELDS}
CHAT_FIELDS = {
    "messages",
    "max_completion_tokens",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    *_COMMON_FIELDS,
}
COMPLETION_FIELDS = {"prompt", "echo", "best_of", "suffix", *COMPLETION_REFUSED_FIELDS}
COMPLETION_FIELDS |= _COMMON_FIELDS
EMBEDDING_FIELDS = {"model", "input", "encoding_format", "dimensions", "user"}
ENCODING_FORMATS = ("float", "base64")
# Coding agents (OpenCode, ...) name the conversation here on every request; OpenAI's `user`
# field names an end user instead, so it is not used for this.
SESSION_HEADER = "x-session-affinity"


@dataclass(frozen=True)
class StreamMode:
    """How the answer is delivered: one object, or SSE with usage in a last chunk or not."""

    stream: bool = False
    include_usage: bool = False


def log_unknown_fields(body: dict[str, Any], known: Iterable[str], endpoint: str) -> None:
    unknown = sorted(set(body) - set(known))
    if unknown:
        log.debug("%s: ignoring unsupported fields %s", endpoint, ", ".join(unknown))


def parse_stop(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise BadRequest("'stop' must be a string or an array of strings", "stop")
    if len(items) > MAX_STOPS:
        raise BadRequest(f"'stop' takes at most {MAX_STOPS} strings, got {len(items)}", "stop")
    if any(not 1 <= len(s) <= MAX_STOP_CHARS for s in items):
        raise BadRequest(f"'stop' strings must be 1..{MAX_STOP_CHARS} characters", "stop")
    return items


def parse_logit_bias(body: dict[str, Any]) -> dict[int, float]:
    bias = body.get("logit_bias")
    if bias is None:
        return {}
    if not isinstance(bias, dict):
        raise BadRequest("'logit_bias' must be an object of token id -> bias", "logit_bias")
    return {_token_key(key): _bias_value(key, value) for key, value in bias.items()}


def _token_key(key: str) -> int:
    # Past ten digits (leading zeros aside) no int32; int() itself refuses 4,300 or more.
    digits = key.lstrip("0") or "0"
    if not key.isascii() or not key.isdigit() or len(digits) > 10 or int(digits) > INT32_MAX:
        raise BadRequest(f"'logit_bias' keys must be token ids, got {key[:40]!r}", "logit_bias")
    return int(digits)


def _bias_value(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not -100 <= value <= 100:
        raise BadRequest(
            f"'logit_bias' values must be numbers between -100 and 100, got {value!r} for {key}",
            "logit_bias",
        )
    return float(value)


def parse_max_tokens(body: dict[str, Any]) -> int | None:
    """max_completion_tokens (OpenAI's newer name) wins over max_tokens when both are set."""
    newer = get_int(body, "max_completion_tokens", 1, UINT32_MAX)
    older = get_int(body, "max_tokens", 1, UINT32_MAX)
    return newer if newer is not None else older


def parse_sampling(
    body: dict[str, Any], logprobs: Callable[[dict[str, Any]], inference_pb2.SamplingParams]
) -> inference_pb2.SamplingParams:
    """Every sampling field of chat and completions (whose `logprobs` differ); unset fields
    stay unset for the core."""
    # The contract's ranges, which the core checks too.
    numbers = {key: get_number(body, key, bounds) for key, bounds in SAMPLING_RANGES.items()}
    top_k = get_int(body, "top_k", MIN_TOP_K, MAX_TOP_K)
    seed = get_int(body, "seed", INT64_MIN, INT64_MAX)
    # The core knows the model's slots, so it checks the upper bound.
    n = get_int(body, "n", 1, UINT32_MAX)
    sampling = inference_pb2.SamplingParams(
        stop=parse_stop(body), logit_bias=parse_logit_bias(body)
    )
    for key, value in numbers.items():
        if value is not None:
            setattr(sampling, key, value)
    if top_k is not None:
        sampling.top_k = top_k
    if seed is not None:
        sampling.seed = core_seed(seed)
    if n is not None:
        sampling.n = n
    max_tokens = parse_max_tokens(body)
    if max_tokens is not None:
        sampling.max_tokens = max_tokens
    sampling.MergeFrom(logprobs(body))
    sampling.MergeFrom(constraint(body))
    return sampling


def chat_logprobs(body: dict[str, Any]) -> inference_pb2.SamplingParams:
    """logprobs: bool, and top_logprobs: 0..20, which needs logprobs true (as OpenAI checks)."""
    wanted = get_bool(body, "logprobs")
    top = get_int(body, "top_logprobs", 0, MAX_TOP_LOGPROBS)
    if top and not wanted:
        raise BadRequest("'top_logprobs' needs 'logprobs' set to true", "top_logprobs")
    return _logprobs_params(top or 0) if wanted else inference_pb2.SamplingParams()


def completion_logprobs(body: dict[str, Any]) -> inference_pb2.SamplingParams:
    """The legacy API's logprobs: 0..5 turns them on and counts the rivals; null or false: off."""
    if body.get("top_logprobs") not in (None, 0):
        raise BadRequest("'top_logprobs' is for chat; here 'logprobs' is the count", "top_logprobs")
    if body.get("logprobs") is False:
        return inference_pb2.SamplingParams()
    top = get_int(body, "logprobs", 0, MAX_COMPLETION_LOGPROBS)
    return inference_pb2.SamplingParams() if top is None else _logprobs_params(top)


def _logprobs_params(top: int) -> inference_pb2.SamplingParams:
    return inference_pb2.SamplingParams(logprobs=True, top_logprobs=top)


def parse_stream_mode(body: dict[str, Any]) -> StreamMode:
    stream = bool(get_bool(body, "stream"))
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("'stream_options' must be an object", "stream_options")
    include_usage = stream and bool(options and options.get("include_usage"))
    return StreamMode(stream=stream, include_usage=include_usage)


def parse_message(index: int, message: Any) -> inference_pb2.ChatMessage:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise BadRequest(f"{where} must be an object", where)
    role = message.get("role")
    if not isinstance(role, str) or role not in CHAT_ROLES:  # a list or object is no role
        roles = ", ".join(CHAT_ROLES)
        raise BadRequest(f"{where}.role must be one of {roles}, got {role!r}", f"{where}.role")
    content = message_content(where, role, message.get("content"))
    name = message.get("name")
    if name is not None and not isinstance(name, str):
        raise BadRequest(f"{where}.name must be a string", f"{where}.name")
    return inference_pb2.ChatMessage(
        role=CHAT_ROLES[role],
        content=content,
        name=name or "",
        **message_tool_fields(where, message),
    )


def message_content(where: str, role: str, content: Any) -> str:
    """A string, or text parts joined; an assistant turn that only called tools may be null."""
    if isinstance(content, str):
        return content
    if content is None and role == "assistant":
        return ""
    if not isinstance(content, list) or not content:
        raise BadRequest(
            f"{where}.content must be a string or an array of text parts", f"{where}.content"
        )
    texts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, dict) else type_name(part)
            raise BadRequest(
                f"{where}.content: only text parts are supported, got {kind!r}", f"{where}.content"
            )
        if not isinstance(part.get("text"), str):
            raise BadRequest(
                f"{where}.content: a text part needs a string 'text'", f"{where}.content"
            )
        texts.append(part["text"])
    return "".join(texts)


def parse_messages(body: dict[str, Any]) -> list[inference_pb2.ChatMessage]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array", "messages")
    return [parse_message(index, message) for index, message in enumerate(messages)]


def session_id(headers: Mapping[str, str]) -> str:
    """The conversation named by the x-session-affinity header; '' when there is none."""
    value = headers.get(SESSION_HEADER, "")
    if len(value) > MAX_SESSION_CHARS:
        raise BadRequest(
            f"'{SESSION_HEADER}' takes at most {MAX_SESSION_CHARS} characters, got {len(value)}",
            SESSION_HEADER,
        )
    try:
        value.encode()
    except UnicodeEncodeError as error:  # aiohttp keeps undecodable header bytes as surrogates
        raise BadRequest(f"'{SESSION_HEADER}' must be UTF-8 text", SESSION_HEADER) from error
    return value


def chat_request(
    body: dict[str, Any], session: str = ""
) -> tuple[inference_pb2.ChatRequest, StreamMode]:
    """POST /v1/chat/completions body (and the session_id() of its headers) -> ChatRequest."""
    log_unknown_fields(body, CHAT_FIELDS, "chat.completions")
    refuse_unsupported(body)
    request = inference_pb2.ChatRequest(
        model_id=get_str(body, "model", required=True),
        messages=parse_messages(body),
        sampling=parse_sampling(body, chat_logprobs),
        session_id=session,
        **tool_fields(body),
    )
    return request, parse_stream_mode(body)


def completion_request(
    body: dict[str, Any], session: str = ""
) -> tuple[inference_pb2.GenerateRequest, StreamMode]:
    """POST /v1/completions body (and its session) -> GenerateRequest (raw prompt, no template)."""
    log_unknown_fields(body, COMPLETION_FIELDS, "completions")
    refuse_unsupported(body, COMPLETION_REFUSED_FIELDS)
    if get_bool(body, "echo"):
        raise BadRequest("echo is not supported", "echo")
    if get_int(body, "best_of") not in (None, 1):
        raise BadRequest("only best_of=1 is supported", "best_of")
    if get_str(body, "suffix"):
        raise BadRequest("suffix is not supported", "suffix")
    request = inference_pb2.GenerateRequest(
        model_id=get_str(body, "model", required=True),
        sampling=parse_sampling(body, completion_logprobs),
        session_id=session,
    )
    prompt = parse_prompt(body.get("prompt"))
    if isinstance(prompt, str):
        request.text = prompt
    else:
        request.token_ids.ids.extend(prompt)
    return request, parse_stream_mode(body)


def parse_prompt(prompt: Any) -> str | list[int]:
    """One prompt: a string or token ids, bare or as the only item of an array."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not prompt:
            raise BadRequest("'prompt' must not be empty", "prompt")
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, str | list) for p in prompt):
        raise BadRequest("only one prompt per request is supported", "prompt")
    return token_ids(prompt, "prompt")


def token_ids(value: Any, param: str) -> list[int]:
    if not isinstance(value, list) or not value:
        raise BadRequest(f"'{param}' must be a non-empty string or array of token ids", param)
    ids = []
    for item in value:
        token = as_token_id(item)
        if token is None:
            raise BadRequest(
                f"'{param}' token ids must be non-negative integers, got {item!r}", param
            )
        ids.append(token)
    return ids


def as_token_id(item: Any) -> int | None:
    """A token id, or None: an integer in int32's range, where JSON's 5.0 is 5 (as get_int reads
    integers, and as JSON Schema's "integer" has it)."""
    if isinstance(item, float) and item.is_integer():
        item = int(item)
    if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item <= INT32_MAX:
        return None
    return item


def embed_request(body: dict[str, Any]) -> tuple[inference_pb2.EmbedRequest, str]:
    """POST /v1/embeddings body -> EmbedRequest, and the encoding the vectors go back in."""
    log_unknown_fields(body, EMBEDDING_FIELDS, "embeddings")
    if body.get("dimensions") is not None:
        raise BadRequest(
            "'dimensions' is not supported: vectors have the model's size", "dimensions"
        )
    encoding = get_str(body, "encoding_format") or "float"
    if encoding not in ENCODING_FORMATS:
        raise BadRequest("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    request = inference_pb2.EmbedRequest(
        model_id=get_str(body, "model", required=True), inputs=embed_inputs(body.get("input"))
    )
    return request, encoding


def embed_inputs(value: Any) -> list[inference_pb2.EmbedInput]:
    """string | list[str] | list[int] | list[list[int]] -> one EmbedInput each."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise BadRequest("'input' must be a non-empty string or array", "input")
    if all(isinstance(item, int | float) and not isinstance(item, bool) for item in value):
        return [_ids_input(value)]
    return [_one_input(item) for item in value]


def _one_input(item: Any) -> inference_pb2.EmbedInput:
    if isinstance(item, str):
        if not item:
            raise BadRequest("'input' strings must not be empty", "input")
        return inference_pb2.EmbedInput(text=item)
    return _ids_input(item)


def _ids_input(ids: Any) -> inference_pb2.EmbedInput:
    return inference_pb2.EmbedInput(token_ids=inference_pb2.TokenIds(ids=token_ids(ids, "input")))
