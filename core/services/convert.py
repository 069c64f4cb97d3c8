"""Domain objects <-> protobuf messages: pure functions, one direction each."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from minerva.v1 import inference_pb2, models_pb2

from core.chat.types import (
    ChatMessage,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolChoiceMode,
    ToolRequest,
)
from core.engine.logprobs import SampledLogprob, TokenLogprob
from core.engine.types import (
    ChoiceEnd,
    EngineStats,
    FinishReason,
    GenerationResult,
    LoadProgress,
    LoadStage,
    TokenChunk,
)
from core.errors import InvalidRequest
from core.keep_alive import UNCHANGED, Default, KeepAlive
from core.metadata.types import ModelFormat, ModelMetadata
from core.model_slot import LoadState

_FORMATS = {
    ModelFormat.GGUF: models_pb2.MODEL_FORMAT_GGUF,
    ModelFormat.SAFETENSORS: models_pb2.MODEL_FORMAT_SAFETENSORS,
    ModelFormat.PICKLE: models_pb2.MODEL_FORMAT_PICKLE,
}
LOAD_STATES = {
    LoadState.UNLOADED: models_pb2.LOAD_STATE_UNLOADED,
    LoadState.LOADING: models_pb2.LOAD_STATE_LOADING,
    LoadState.LOADED: models_pb2.LOAD_STATE_LOADED,
    LoadState.FAILED: models_pb2.LOAD_STATE_FAILED,
}
_STAGES = {
    LoadStage.QUEUED: models_pb2.LOAD_STAGE_QUEUED,
    LoadStage.CONVERTING: models_pb2.LOAD_STAGE_CONVERTING,
    LoadStage.LOADING_WEIGHTS: models_pb2.LOAD_STAGE_LOADING_WEIGHTS,
    LoadStage.CREATING_CONTEXT: models_pb2.LOAD_STAGE_CREATING_CONTEXT,
    LoadStage.READY: models_pb2.LOAD_STAGE_READY,
}
_FINISH = {
    FinishReason.STOP: inference_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: inference_pb2.FINISH_REASON_LENGTH,
    FinishReason.CANCELLED: inference_pb2.FINISH_REASON_CANCELLED,
    FinishReason.TOOL_CALLS: inference_pb2.FINISH_REASON_TOOL_CALLS,
}


def metadata_to_pb(meta: ModelMetadata) -> models_pb2.ModelMetadata:
    return models_pb2.ModelMetadata(
        format=_FORMATS[meta.format],
        architecture=meta.architecture,
        quantization=meta.quantization,
        file_size_bytes=meta.file_size_bytes,
        tensor_count=meta.tensor_count,
        layer_count=meta.layer_count,
        embedding_length=meta.embedding_length,
        vocab_size=meta.vocab_size,
        context_length=meta.context_length,
        parameter_count=meta.parameter_count,
        has_chat_template=meta.has_chat_template,
        name=meta.name,
    )


def stats_to_pb(stats: EngineStats) -> models_pb2.ModelStats:
    return models_pb2.ModelStats(
        queue_depth=stats.queue_depth,
        active_sequences=stats.active_sequences,
        slots=stats.slots,
        prefill_tokens=stats.prefill_tokens,
        decode_tokens=stats.decode_tokens,
        prefix_cache_hit_tokens=stats.prefix_cache_hit_tokens,
    )


COMPACT_HEADER = "MODEL|QUANT|SIZE_MB|TENSORS|LAYERS|VOCAB"


def compact_listing(models: Sequence[models_pb2.Model]) -> str:
    """One line per model, MODEL|QUANT|SIZE_MB|TENSORS|LAYERS|VOCAB, after a header line;
    a model whose file could not be read has only its id."""
    lines = [COMPACT_HEADER]
    for model in models:
        if not model.HasField("metadata"):
            lines.append(f"{model.id}|||||")
            continue
        meta = model.metadata
        size_mb = f"{meta.file_size_bytes / 1_000_000:.1f}"
        layers = str(meta.layer_count) if meta.layer_count else ""
        vocab = str(meta.vocab_size) if meta.vocab_size else ""
        lines.append(
            f"{model.id}|{meta.quantization}|{size_mb}|{meta.tensor_count}|{layers}|{vocab}"
        )
    return "\n".join(lines) + "\n"


def progress_to_pb(event: LoadProgress) -> models_pb2.LoadModelResponse:
    return models_pb2.LoadModelResponse(
        stage=_STAGES[event.stage], progress=event.progress, message=event.message
    )


def chunk_fields(
    chunk: TokenChunk, fingerprint: str = "", tool_calls: Sequence[ToolCallDelta] = ()
) -> inference_pb2.GenerationChunk:
    return inference_pb2.GenerationChunk(
        text=chunk.text,
        token_ids=chunk.token_ids,
        fingerprint=fingerprint,
        index=chunk.index,
        logprobs=[sampled_logprob_to_pb(s) for s in chunk.logprobs],
        tool_calls=[tool_call_delta_to_pb(d) for d in tool_calls],
    )


def tool_call_delta_to_pb(delta: ToolCallDelta) -> inference_pb2.ToolCallDelta:
    return inference_pb2.ToolCallDelta(
        call_index=delta.call_index, id=delta.id, name=delta.name, arguments=delta.arguments
    )


def sampled_logprob_to_pb(scored: SampledLogprob) -> inference_pb2.SampledLogprob:
    return inference_pb2.SampledLogprob(
        token=token_logprob_to_pb(scored.token), top=[token_logprob_to_pb(t) for t in scored.top]
    )


def token_logprob_to_pb(token: TokenLogprob) -> inference_pb2.TokenLogprob:
    return inference_pb2.TokenLogprob(
        token_id=token.token,
        text=token.piece.decode("utf-8", "replace"),
        piece=token.piece,
        logprob=token.logprob,
    )


def choice_end_to_pb(end: ChoiceEnd) -> inference_pb2.ChoiceEnd:
    return inference_pb2.ChoiceEnd(
        index=end.index,
        finish_reason=_FINISH[end.finish_reason],
        matched_stop=end.matched_stop,
        completion_tokens=end.completion_tokens,
    )


def final_fields(result: GenerationResult, fingerprint: str) -> inference_pb2.GenerationFinal:
    t = result.timings
    return inference_pb2.GenerationFinal(
        finish_reason=_FINISH[result.finish_reason],
        usage=inference_pb2.Usage(
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            cached_prompt_tokens=result.cached_tokens,
        ),
        timings=inference_pb2.Timings(
            queue_ms=t.queue_ms,
            time_to_first_token_ms=t.time_to_first_token_ms,
            prompt_ms=t.prompt_ms,
            decode_ms=t.decode_ms,
            decode_tokens_per_second=t.decode_tokens_per_second,
            prompt_tokens_per_second=t.prompt_tokens_per_second,
            total_ms=t.total_ms,
        ),
        matched_stop=result.matched_stop,
        fingerprint=fingerprint,
        choices=[choice_end_to_pb(c) for c in result.choices],
    )


def messages_from_pb(messages: list[inference_pb2.ChatMessage]) -> list[ChatMessage]:
    return [
        ChatMessage(
            role=m.role,
            content=m.content,
            name=m.name,
            tool_calls=tuple(ToolCall(c.id, c.name, c.arguments) for c in m.tool_calls),
            tool_call_id=m.tool_call_id,
        )
        for m in messages
    ]


_TOOL_CHOICE_MODES = {
    inference_pb2.TOOL_CHOICE_MODE_NONE: ToolChoiceMode.NONE,
    inference_pb2.TOOL_CHOICE_MODE_AUTO: ToolChoiceMode.AUTO,
    inference_pb2.TOOL_CHOICE_MODE_REQUIRED: ToolChoiceMode.REQUIRED,
    inference_pb2.TOOL_CHOICE_MODE_FUNCTION: ToolChoiceMode.FUNCTION,
}


def tool_request_from_pb(
    tools: Sequence[inference_pb2.Tool],
    choice: inference_pb2.ToolChoice | None,
    parallel: bool | None,
) -> ToolRequest:
    """Unset tool_choice is AUTO with tools and NONE without; parallel calls default to on."""
    default = ToolChoiceMode.AUTO if tools else ToolChoiceMode.NONE
    mode = _TOOL_CHOICE_MODES.get(choice.mode, default) if choice is not None else default
    return ToolRequest(
        tools=tuple(Tool(t.name, t.description, t.parameters, t.strict) for t in tools),
        choice=ToolChoice(mode, choice.function_name if choice is not None else ""),
        parallel=True if parallel is None else parallel,
    )


def keep_alive_from_pb(request: Any) -> KeepAlive | Default:
    """A request's keep_alive_seconds; UNCHANGED when unset. NaN is refused."""
    if not request.HasField("keep_alive_seconds"):
        return UNCHANGED
    value = float(request.keep_alive_seconds)
    if math.isnan(value):
        raise InvalidRequest("keep_alive_seconds must be a number", param="keep_alive_seconds")
    return value


def context_size_from_pb(request: Any) -> int | None:
    """A request's context_size (Ollama's num_ctx; the manager checks it); None when unset."""
    return int(request.context_size) if request.HasField("context_size") else None


def threads_from_pb(request: Any) -> int | None:
    """A request's threads (Ollama's num_thread; the engine clamps it); None when unset."""
    if not request.HasField("threads"):
        return None
    if request.threads < 1:
        raise InvalidRequest("threads must be at least 1", param="threads")
    return int(request.threads)


def prompt_from_pb(request: inference_pb2.GenerateRequest) -> str | list[int]:
    if request.WhichOneof("prompt") == "token_ids":
        return list(request.token_ids.ids)
    return request.text


def embed_inputs_from_pb(inputs: list[inference_pb2.EmbedInput]) -> list[str | list[int]]:
    return [
        list(i.token_ids.ids) if i.WhichOneof("input") == "token_ids" else i.text for i in inputs
    ]
