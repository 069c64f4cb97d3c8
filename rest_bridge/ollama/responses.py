"""Pure builders of Ollama response objects from the core's protobuf messages."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from minerva.v1 import inference_pb2, models_pb2

from rest_bridge import logprobs as lp

# The Ollama API version whose shapes this bridge speaks.
OLLAMA_VERSION = "0.12.6"
NS_PER_MS = 1_000_000
# What Ollama shows for a model kept loaded for good (its largest duration from now).
NEVER = datetime(2318, 1, 1, tzinfo=UTC)
DONE_REASONS = {
    inference_pb2.FINISH_REASON_STOP: "stop",
    inference_pb2.FINISH_REASON_TOOL_CALLS: "stop",
    inference_pb2.FINISH_REASON_LENGTH: "length",
    # The server cut the answer short (shutdown): truncated, as by a length limit.
    inference_pb2.FINISH_REASON_CANCELLED: "length",
}
_FORMATS = {
    models_pb2.MODEL_FORMAT_GGUF: "gguf",
    models_pb2.MODEL_FORMAT_SAFETENSORS: "safetensors",
    models_pb2.MODEL_FORMAT_PICKLE: "pickle",
}


def rfc3339(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).isoformat().replace("+00:00", "Z")


def from_unix(seconds: float) -> str:
    return rfc3339(datetime.fromtimestamp(seconds, UTC))


def tag_name(model_id: str) -> str:
    return f"{model_id}:latest"


def human_number(count: int) -> str:
    """Ollama's parameter_size: 134515008 -> "134.52M", 8000000000 -> "8B"."""
    for scale, suffix, decimals in ((10**9, "B", 1), (10**6, "M", 2)):
        if count >= scale:
            value = count / scale
            return f"{value:.0f}{suffix}" if value.is_integer() else f"{value:.{decimals}f}{suffix}"
    return f"{count // 1000}K" if count >= 1000 else str(count)


def digest(model: models_pb2.Model) -> str:
    """An opaque SHA-256 identifying the model file (of its fingerprint: path, size, mtime)."""
    return hashlib.sha256((model.fingerprint or model.id).encode()).hexdigest()


def details(model: models_pb2.Model) -> dict[str, Any]:
    meta = model.metadata
    family = meta.architecture
    return {
        "parent_model": "",
        "format": _FORMATS.get(meta.format, ""),
        "family": family,
        "families": [family] if family else None,
        "parameter_size": human_number(meta.parameter_count) if meta.parameter_count else "",
        "quantization_level": meta.quantization,
    }


def tag(model: models_pb2.Model) -> dict[str, Any]:
    """One entry of /api/tags."""
    name = tag_name(model.id)
    return {
        "name": name,
        "model": name,
        "modified_at": from_unix(model.modified_unix),
        "size": model.metadata.file_size_bytes,
        "digest": digest(model),
        "details": details(model),
    }


def running(model: models_pb2.Model) -> dict[str, Any]:
    """One entry of /api/ps (a loaded model)."""
    name = tag_name(model.id)
    expires = from_unix(model.expires_unix) if model.expires_unix else rfc3339(NEVER)
    return {
        "name": name,
        "model": name,
        "size": model.memory_bytes,
        "digest": digest(model),
        "details": details(model),
        "expires_at": expires,
        "size_vram": 0,
        "context_length": model.context_size,
    }


def show(reply: models_pb2.GetModelResponse) -> dict[str, Any]:
    """/api/show from GetModel with its header."""
    model = reply.model
    info: dict[str, Any] = json.loads(reply.header_json or "{}")
    info.setdefault("general.parameter_count", model.metadata.parameter_count)
    # Ollama's Modelfile PARAMETER lines: the CPU threads the model computes with now.
    params = {"num_thread": model.threads} if model.threads else {}
    modelfile = f"# Served by Minerva from its model registry\nFROM {model.id}\n"
    return {
        "license": "",
        "modelfile": modelfile + "".join(f"PARAMETER {k} {v}\n" for k, v in params.items()),
        # As Ollama prints them: each name padded to 30 characters, then the value.
        "parameters": "\n".join(f"{k:<30} {v}" for k, v in params.items()),
        "template": reply.chat_template,
        "details": details(model),
        "model_info": info,
        # Every servable model here also embeds (/api/embed pools its hidden states).
        "capabilities": ["completion", "tools", "embedding"] if model.servable else [],
        "modified_at": from_unix(model.modified_unix),
    }


def timings(final: inference_pb2.GenerationFinal) -> dict[str, Any]:
    """The last object's counts and durations (nanoseconds), from the core's timings."""
    t, usage = final.timings, final.usage
    return {
        "done_reason": DONE_REASONS.get(final.finish_reason, "stop"),
        "total_duration": int(t.total_ms * NS_PER_MS),
        # The core counts a first load as queue time.
        "load_duration": int(t.queue_ms * NS_PER_MS),
        "prompt_eval_count": usage.prompt_tokens,
        "prompt_eval_duration": int(t.prompt_ms * NS_PER_MS),
        "eval_count": usage.completion_tokens,
        "eval_duration": int(t.decode_ms * NS_PER_MS),
    }


def logprobs(items: lp.SampledLogprobs) -> list[dict[str, Any]]:
    """Ollama's per-token logprobs, with their rivals."""
    return list(lp.chat(items)["content"])
