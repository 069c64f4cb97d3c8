"""Pure reads of Ollama request bodies into protobuf: names, options, format, keep_alive, messages."""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

from minerva.v1 import inference_pb2
from minerva.v1.limits import MAX_TOP_K, MAX_TOP_LOGPROBS, MIN_TOP_K, SAMPLING_RANGES

from rest_bridge.errors import BadRequest
from rest_bridge.fields import get_bool, get_str, type_name
from rest_bridge.protocol import message_content
from rest_bridge.seed import INT64_MAX, INT64_MIN, core_seed
from rest_bridge.structured import ANY_OBJECT_SCHEMA

log = logging.getLogger(__name__)

# Ollama's tag convention: "name:latest" is the model "name" itself.
LATEST = ":latest"
UINT32_MAX = 2**32 - 1
# Options honoured, by how they map onto SamplingParams: the contract's ranges, as (low, high)
# for the OpenAPI documents (limits.SAMPLING_RANGES also says which low ends are open).
NUMBER_OPTIONS = {key: (bounds.low, bounds.high) for key, bounds in SAMPLING_RANGES.items()}
# Options that change how fast or where a model runs, never what it writes: accepted.
NO_EFFECT_OPTIONS = frozenset(
    {
        "num_gpu",
        "main_gpu",
        "num_batch",
        "numa",
        "low_vram",
        "use_mmap",
        "use_mlock",
        "vocab_only",
        "embedding_only",
        "logits_all",
        "f16_kv",
        "num_keep",
        "penalize_newline",
        "mirostat_tau",
        "mirostat_eta",
    }
)
# Options that would change the answer, with the one value Minerva's sampler matches.
FIXED_OPTIONS: dict[str, float] = {
    "repeat_last_n": 64,
    "typical_p": 1.0,
    "tfs_z": 1.0,
    "mirostat": 0,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def model_id(body: dict[str, Any]) -> tuple[str, str]:
    """(the core's model id, the name as the client wrote it) from `model` (or `name`)."""
    name = get_str(body, "model") or get_str(body, "name")
    if not name:
        raise BadRequest("model is required", "model")
    return name.removesuffix(LATEST), name


def keep_alive(body: dict[str, Any], default: float) -> float:
    """Seconds from a number or a Go duration ("5m", "1h30m", "-1"). Absent: `default`, as
    Ollama resets every request's expiry to its default, not to the last request's choice."""
    value = body.get("keep_alive")
    if value is None:
        return default
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = _seconds(value)
    elif isinstance(value, str):
        seconds = parse_duration(value)
    else:
        raise BadRequest(f"keep_alive must be a number or a duration, got {type_name(value)}")
    if not math.isfinite(seconds):
        raise BadRequest("keep_alive must be finite", "keep_alive")
    return seconds


def _seconds(value: float) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer too large for a float: refused as infinite
        return math.inf


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration (and a bare number of seconds, as Ollama also accepts)."""
    raw = text.strip()
    try:
        return float(raw)
    except ValueError:
        pass
    sign, rest = (-1.0, raw[1:]) if raw.startswith("-") else (1.0, raw.removeprefix("+"))
    parts = _DURATION_PART.findall(rest)
    if not rest or "".join(n + u for n, u in parts) != rest:
        raise BadRequest(f"keep_alive {text!r} is not a duration such as '5m' or '1h30m'")
    return sign * sum(float(number) * _UNITS[unit] for number, unit in parts)


def _options(body: dict[str, Any]) -> dict[str, Any]:
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise BadRequest(f"options must be an object, got {type_name(options)}", "options")
    return options


def num_ctx(body: dict[str, Any]) -> int | None:
    """`options.num_ctx`: the context size to load the model with (the core's context_size,
    which clamps it to the model's trained context); None when absent."""
    options = _options(body)
    if options.get("num_ctx") is None:
        return None
    return _int(options, "num_ctx", 1, UINT32_MAX)


def num_thread(body: dict[str, Any]) -> int | None:
    """`options.num_thread`: CPU threads the model computes with from this request on (the
    core's threads, which clamps it to its configured count); None when absent or 0, which
    Ollama reads as its default."""
    options = _options(body)
    if options.get("num_thread") is None:
        return None
    threads = _int(options, "num_thread", 0, UINT32_MAX)
    return threads or None


def sampling(body: dict[str, Any]) -> tuple[inference_pb2.SamplingParams, int | None]:
    """SamplingParams from `options`, `format` and `logprobs`, and the num_ctx asked for."""
    options = _options(body)
    params = inference_pb2.SamplingParams()
    for key in SAMPLING_RANGES:
        if options.get(key) is not None:
            setattr(params, key, _number(options, key))
    _integers(options, params)
    num_thread(body)  # refused here, before the request goes anywhere
    _check_fixed(options)
    known = {*NUMBER_OPTIONS, *NO_EFFECT_OPTIONS, *FIXED_OPTIONS, *_INTEGERS}
    unknown = set(options) - known
    if unknown:
        log.debug("ollama: ignoring unknown options %s", ", ".join(sorted(unknown)))
    schema = response_schema(body)
    if schema:
        params.json_schema = schema
    _logprobs(body, params)
    return params, num_ctx(body)


_INTEGERS = frozenset({"num_predict", "top_k", "seed", "stop", "num_ctx", "num_thread"})


def _integers(options: dict[str, Any], params: inference_pb2.SamplingParams) -> None:
    if options.get("num_predict") is not None:
        predict = _int(options, "num_predict", -2, UINT32_MAX)
        if predict == 0:
            raise BadRequest("options.num_predict must be > 0, or -1 / -2", "options.num_predict")
        if predict > 0:  # -1 (no limit) and -2 (fill the context) both run to the context's end
            params.max_tokens = predict
    if options.get("top_k") is not None:
        params.top_k = _int(options, "top_k", MIN_TOP_K, MAX_TOP_K)
    seed = options.get("seed")
    if seed is not None and seed != -1:  # Ollama's -1: a random seed
        params.seed = core_seed(_int(options, "seed", INT64_MIN, INT64_MAX))
    stop = options.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise BadRequest("options.stop must be a list of strings", "options.stop")
        params.stop.extend(stops)


def _check_fixed(options: dict[str, Any]) -> None:
    for key, only in FIXED_OPTIONS.items():
        value = options.get(key)
        if value is not None and value != only:
            raise BadRequest(
                f"options.{key} is not supported (only {only:g}, the sampler Minerva runs)",
                f"options.{key}",
            )


def _number(options: dict[str, Any], key: str) -> float:
    value, bounds = options[key], SAMPLING_RANGES[key]
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (is_number and bounds.admits_float32(value)):
        raise BadRequest(f"options.{key} must be a number in {bounds}", f"options.{key}")
    return float(value)


def _int(options: dict[str, Any], key: str, low: int, high: int) -> int:
    value = options[key]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"options.{key} must be an integer in [{low}, {high}]", f"options.{key}")
    return value


def response_schema(body: dict[str, Any]) -> str:
    """`format`: "json" (any JSON object) or a JSON Schema object; "" for free text."""
    fmt = body.get("format")
    if fmt in (None, ""):
        return ""
    if fmt == "json":
        return ANY_OBJECT_SCHEMA
    if isinstance(fmt, dict):
        return json.dumps(fmt)
    raise BadRequest("format must be 'json' or a JSON Schema object", "format")


def _logprobs(body: dict[str, Any], params: inference_pb2.SamplingParams) -> None:
    if not get_bool(body, "logprobs"):
        if body.get("top_logprobs"):
            raise BadRequest("top_logprobs needs logprobs set to true", "top_logprobs")
        return
    params.logprobs = True
    top = body.get("top_logprobs")
    if top is not None:
        if isinstance(top, float) and top.is_integer():
            top = int(top)
        # The contract's bound (the field is a uint32: a larger value cannot even be sent).
        if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_TOP_LOGPROBS:
            raise BadRequest(
                f"top_logprobs must be an integer in [0, {MAX_TOP_LOGPROBS}]", "top_logprobs"
            )
        params.top_logprobs = top


def refuse_thinking(body: dict[str, Any], name: str) -> None:
    """`think` asks for a reasoning trace no model served here writes: Ollama's 400."""
    think = body.get("think")
    if think not in (None, False):
        raise BadRequest(f'"{name}" does not support thinking', "think")


def refuse_images(where: str, item: dict[str, Any]) -> None:
    if item.get("images"):
        raise BadRequest(f"{where}: images are not supported by the models served here", "images")


def messages(body: dict[str, Any]) -> list[inference_pb2.ChatMessage]:
    raw = body.get("messages") or []
    if not isinstance(raw, list):
        raise BadRequest("messages must be an array", "messages")
    return [_message(i, m) for i, m in enumerate(raw)]


def _message(index: int, message: Any) -> inference_pb2.ChatMessage:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise BadRequest(f"{where} must be an object", where)
    role = message.get("role")
    if role not in ("system", "user", "assistant", "tool"):
        raise BadRequest(f"{where}.role must be system, user, assistant or tool", f"{where}.role")
    refuse_images(where, message)
    content = message.get("content")
    text = "" if content is None else message_content(where, role, content)
    raw_calls = message.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise BadRequest(f"{where}.tool_calls must be an array", f"{where}.tool_calls")
    calls = [_call(f"{where}.tool_calls[{j}]", c) for j, c in enumerate(raw_calls)]
    name = get_str(message, "tool_name", prefix=f"{where}.") or ""
    return inference_pb2.ChatMessage(role=role, content=text, name=name, tool_calls=calls)


def _call(where: str, call: Any) -> inference_pb2.ToolCall:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise BadRequest(f"{where} needs a function with a name", where)
    arguments = function.get("arguments") or {}
    if isinstance(arguments, str):
        text = arguments
    elif isinstance(arguments, dict):
        text = json.dumps(arguments, ensure_ascii=False)
    else:
        raise BadRequest(f"{where}.function.arguments must be an object", where)
    return inference_pb2.ToolCall(
        id=str(call.get("id") or ""), name=function["name"], arguments=text
    )
