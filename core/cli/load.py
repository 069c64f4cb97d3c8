"""`minerva load MODEL`: LoadModel's streamed progress as a bar (plain lines when not a TTY)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TextIO

from minerva.v1 import models_pb2

from rest_bridge.core_client import CoreClient

BAR_WIDTH = 30
# Stages whose `progress` rises from 0 to 1; the others are single steps.
MEASURED = frozenset({models_pb2.LOAD_STAGE_CONVERTING, models_pb2.LOAD_STAGE_LOADING_WEIGHTS})
# Plain output reports measured stages at these fractions only, so logs stay short.
PLAIN_STEPS = (0.25, 0.5, 0.75, 1.0)


def stage_label(stage: int) -> str:
    return models_pb2.LoadStage.Name(stage).removeprefix("LOAD_STAGE_").lower().replace("_", " ")


def render_bar(stage: int, progress: float, width: int = BAR_WIDTH) -> str:
    """`loading weights  [#########.....]  60%`; stages without a fraction show no bar."""
    label = stage_label(stage)
    if stage not in MEASURED:
        return label
    fraction = min(max(progress, 0.0), 1.0)
    filled = int(fraction * width)
    return f"{label:<16} [{'#' * filled}{'.' * (width - filled)}] {fraction * 100:3.0f}%"


def ready_line(model: models_pb2.Model) -> str:
    memory = f"{model.memory_bytes / 1_000_000:.1f} MB in memory"
    return f"loaded {model.id}: {memory}, context {model.context_size}, {model.slots} slots"


@dataclass
class ProgressView:
    """Turns LoadModel events into terminal text: one redrawn line on a TTY, else a line per
    stage (and per quarter of a measured stage)."""

    tty: bool
    _stage: int = models_pb2.LOAD_STAGE_UNSPECIFIED
    _reported: float = -1.0
    _drawn: bool = False

    def update(self, event: models_pb2.LoadModelResponse) -> str:
        if event.stage == models_pb2.LOAD_STAGE_READY:
            end = "\n" if self._drawn else ""
            return end + ready_line(event.model) + "\n"
        if self.tty:
            self._drawn = True
            return "\r" + render_bar(event.stage, event.progress) + "\x1b[K"
        return self._plain(event)

    def _plain(self, event: models_pb2.LoadModelResponse) -> str:
        if event.stage != self._stage:
            self._stage, self._reported = event.stage, -1.0
            if event.stage not in MEASURED:
                detail = f": {event.message}" if event.message else ""
                return f"{stage_label(event.stage)}{detail}\n"
        steps = [s for s in PLAIN_STEPS if self._reported < s <= event.progress]
        if event.stage not in MEASURED or not steps:
            return ""
        self._reported = steps[-1]
        return render_bar(event.stage, steps[-1]) + "\n"


async def load_model(client: CoreClient, model_id: str, out: TextIO, tty: bool) -> None:
    """Streams the load to `out`; gRPC errors propagate to the caller."""
    view = ProgressView(tty)
    request = models_pb2.LoadModelRequest(model_id=model_id)
    async for event in client.models.LoadModel(request, metadata=client.metadata):
        out.write(view.update(event))
        out.flush()
