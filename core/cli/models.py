"""`minerva models`: the core's models over gRPC, as a table or the compact one-line form."""

from __future__ import annotations

from collections.abc import Sequence

from minerva.v1 import models_pb2

from rest_bridge.core_client import CoreClient

TABLE_COLUMNS = ("MODEL", "FORMAT", "QUANT", "SIZE_MB", "CONTEXT", "STATE")


def _state(model: models_pb2.Model) -> str:
    name = models_pb2.LoadState.Name(model.load_state).removeprefix("LOAD_STATE_").lower()
    return "error" if model.error and model.load_state != models_pb2.LOAD_STATE_LOADED else name


def model_row(model: models_pb2.Model) -> tuple[str, ...]:
    """One table row; a model whose header could not be read shows its error as its state."""
    if not model.HasField("metadata"):
        return (model.id, "", "", "", "", "error")
    meta = model.metadata
    fmt = models_pb2.ModelFormat.Name(meta.format).removeprefix("MODEL_FORMAT_").lower()
    size_mb = f"{meta.file_size_bytes / 1_000_000:.1f}"
    context = str(model.context_size or meta.context_length or "")
    return (model.id, fmt, meta.quantization, size_mb, context, _state(model))


def format_table(models: Sequence[models_pb2.Model]) -> str:
    """Left-aligned columns separated by two spaces, header first; errors listed below."""
    rows = [TABLE_COLUMNS, *(model_row(m) for m in models)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines += [f"{m.id}: {m.error}" for m in models if m.error]
    return "\n".join(lines) + "\n"


async def list_models(client: CoreClient, compact: bool) -> str:
    """The text `minerva models` prints: the core's own compact listing, or a table."""
    response = await client.models.ListModels(
        models_pb2.ListModelsRequest(compact=compact), metadata=client.metadata
    )
    return response.compact if compact else format_table(response.models)
