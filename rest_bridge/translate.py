"""Pure builders of OpenAI response objects and stream chunks from the core's protobuf messages."""

from __future__ import annotations

import base64
import struct
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from minerva.v1 import inference_pb2, models_pb2

from rest_bridge import logprobs as lp
from rest_bridge import tools

# CANCELLED means the server cut the answer short (shutdown grace ran out): the text is
# truncated, so clients are told "length" (as for max_tokens) rather than a natural "stop".
FINISH_REASONS: dict[int, str] = {
    inference_pb2.FINISH_REASON_STOP: "stop",
    inference_pb2.FINISH_REASON_TOOL_CALLS: "tool_calls",
    inference_pb2.FINISH_REASON_LENGTH: "length",
    inference_pb2.FINISH_REASON_CANCELLED: "length",
}
OWNED_BY = "minerva"
MB = 1_000_000


@dataclass(frozen=True)
class ResponseIds:
    """What every object and chunk of one answer repeats."""

    id: str
    created: int
    model: str

    @classmethod
    def new(cls, prefix: str, model: str, created: float) -> ResponseIds:
        return cls(id=f"{prefix}-{uuid.uuid4().hex}", created=int(created), model=model)


def finish_reason(reason: int) -> str:
    return FINISH_REASONS.get(reason, "stop")


def usage(pb: inference_pb2.Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": pb.prompt_tokens,
        "completion_tokens": pb.completion_tokens,
        "total_tokens": pb.prompt_tokens + pb.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": pb.cached_prompt_tokens},
    }


# Generation streams: Generate and Chat answer the same two events.
GenerationEvent = inference_pb2.GenerateResponse | inference_pb2.ChatResponse


def choice_ends(final: inference_pb2.GenerationFinal) -> list[inference_pb2.ChoiceEnd]:
    """How each choice ended, in index order; a final without `choices` (a core from before
    n existed) ended one choice, index 0, with its top-level finish reason."""
    if final.choices:
        return list(final.choices)
    return [inference_pb2.ChoiceEnd(index=0, finish_reason=final.finish_reason)]


def collect(
    events: Iterable[GenerationEvent],
) -> tuple[dict[int, str], inference_pb2.GenerationFinal]:
    """Joins a whole stream into each choice's text (keyed by index) and its final message."""
    texts: dict[int, list[str]] = defaultdict(list)
    final = inference_pb2.GenerationFinal()
    for event in events:
        if event.WhichOneof("event") == "chunk":
            texts[event.chunk.index].append(event.chunk.text)
        elif event.WhichOneof("event") == "final":
            final = event.final
    return {index: "".join(parts) for index, parts in texts.items()}, final


def _envelope(
    ids: ResponseIds,
    obj: str,
    final: inference_pb2.GenerationFinal,
    choices: list[dict[str, Any]],
) -> dict[str, Any]:
    """A whole answer, or the usage chunk: ids, fingerprint, choices and usage."""
    return {
        "id": ids.id,
        "object": obj,
        "created": ids.created,
        "model": ids.model,
        "system_fingerprint": final.fingerprint or None,
        "choices": choices,
        "usage": usage(final.usage),
    }


# Each choice's sampled tokens (logprobs.collect); None when the request did not ask for them.
PickedLogprobs = Mapping[int, lp.SampledLogprobs] | None


def _choices(
    texts: Mapping[int, str],
    final: inference_pb2.GenerationFinal,
    content: Callable[[int, str], dict[str, Any]],
    logprobs: Callable[[int], dict[str, Any] | None],
) -> list[dict[str, Any]]:
    """One choice per ended index, its text shown by `content`, its own finish reason."""
    return [
        {
            "index": end.index,
            **content(end.index, texts.get(end.index, "")),
            "logprobs": logprobs(end.index),
            "finish_reason": finish_reason(end.finish_reason),
        }
        for end in choice_ends(final)
    ]


def _per_choice(
    picked: PickedLogprobs, shape: Callable[[lp.SampledLogprobs], dict[str, Any]]
) -> Callable[[int], dict[str, Any] | None]:
    if picked is None:
        return lambda index: None
    return lambda index: shape(picked.get(index, ()))


def chat_completion(
    ids: ResponseIds,
    texts: Mapping[int, str],
    final: inference_pb2.GenerationFinal,
    picked: PickedLogprobs = None,
    calls: Mapping[int, list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """`calls`: each choice's tool calls (tools.collect_calls)."""
    choices = _choices(
        texts,
        final,
        lambda index, text: {"message": tools.assistant_message(text, calls or {}, index)},
        _per_choice(picked, lp.chat),
    )
    return _envelope(ids, "chat.completion", final, choices)


def completion(
    ids: ResponseIds,
    texts: Mapping[int, str],
    final: inference_pb2.GenerationFinal,
    picked: PickedLogprobs = None,
) -> dict[str, Any]:
    choices = _choices(
        texts, final, lambda _, text: {"text": text}, _per_choice(picked, lp.completion)
    )
    return _envelope(ids, "text_completion", final, choices)


def _chunk(
    ids: ResponseIds,
    obj: str,
    choice: dict[str, Any],
    fingerprint: str | None,
    with_usage_field: bool,
) -> dict[str, Any]:
    """One stream chunk of one choice; `usage: null` appears only when usage was asked for."""
    chunk: dict[str, Any] = {
        "id": ids.id,
        "object": obj,
        "created": ids.created,
        "model": ids.model,
        "system_fingerprint": fingerprint,
        "choices": [choice],
    }
    if with_usage_field:
        chunk["usage"] = None
    return chunk


def chat_chunk(
    ids: ResponseIds,
    delta: dict[str, Any],
    *,
    index: int = 0,
    finish: str | None = None,
    fingerprint: str | None = None,
    with_usage_field: bool = False,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
    return _chunk(ids, "chat.completion.chunk", choice, fingerprint, with_usage_field)


def completion_chunk(
    ids: ResponseIds,
    text: str,
    *,
    index: int = 0,
    finish: str | None = None,
    fingerprint: str | None = None,
    with_usage_field: bool = False,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}
    return _chunk(ids, "text_completion", choice, fingerprint, with_usage_field)


def usage_chunk(ids: ResponseIds, obj: str, final: inference_pb2.GenerationFinal) -> dict[str, Any]:
    """The last chunk of a stream with stream_options.include_usage: no choices, only usage."""
    return _envelope(ids, obj, final, [])


def model_object(model: models_pb2.Model) -> dict[str, Any]:
    """An OpenAI model object with the three facts tools read at the top level (quantization,
    size, tensors) and the rest of the header metadata under `minerva` (well under 1 KB)."""
    meta = model.metadata
    return {
        "id": model.id,
        "object": "model",
        "created": model.modified_unix,
        "owned_by": OWNED_BY,
        "permission": [],
        "root": model.id,
        "parent": None,
        "quantization": meta.quantization,
        "file_size_mb": round(meta.file_size_bytes / MB, 1),
        "tensor_count": meta.tensor_count,
        "minerva": {
            "format": _enum_suffix(models_pb2.ModelFormat.Name(meta.format), "MODEL_FORMAT_"),
            "architecture": meta.architecture,
            "layer_count": meta.layer_count,
            "embedding_length": meta.embedding_length,
            "vocab_size": meta.vocab_size,
            "context_length": meta.context_length,
            "parameter_count": meta.parameter_count,
            "has_chat_template": meta.has_chat_template,
            "context_size": model.context_size,
            "load_state": _enum_suffix(models_pb2.LoadState.Name(model.load_state), "LOAD_STATE_"),
            "servable": model.servable,
            "fingerprint": model.fingerprint,
            "error": model.error[:200] or None,
        },
    }


def _enum_suffix(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


def model_list(models: Sequence[models_pb2.Model]) -> dict[str, Any]:
    return {"object": "list", "data": [model_object(model) for model in models]}


def encode_vector(values: Sequence[float], encoding: str) -> list[float] | str:
    """float: the numbers; base64: little-endian float32 bytes, as OpenAI sends them."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")
    return list(values)


def embedding_list(
    response: inference_pb2.EmbedResponse, model: str, encoding: str
) -> dict[str, Any]:
    data = [
        {"object": "embedding", "index": index, "embedding": encode_vector(vector.values, encoding)}
        for index, vector in enumerate(response.embeddings)
    ]
    tokens = response.usage.prompt_tokens
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
