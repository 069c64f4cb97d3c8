"""minerva.v1.ModelService: list, describe, load and unload models."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
from minerva.v1 import models_pb2, models_pb2_grpc

from core.chat.templates import select_template
from core.engine.types import LoadStage
from core.engine_factory import EngineFactory
from core.errors import MinervaError
from core.manager import ModelManager
from core.metadata.header_values import header_values
from core.registry import ModelSpec, Registry, fingerprint
from core.services.convert import (
    LOAD_STATES,
    compact_listing,
    context_size_from_pb,
    keep_alive_from_pb,
    metadata_to_pb,
    progress_to_pb,
    stats_to_pb,
    threads_from_pb,
)


class ModelCatalog:
    """Builds Model messages from the registry, the header cache and the manager's load states."""

    def __init__(self, registry: Registry, manager: ModelManager, factory: EngineFactory) -> None:
        self.registry = registry
        self.manager = manager
        self.factory = factory

    def describe(self, spec: ModelSpec, *, strict: bool) -> models_pb2.Model:
        """strict: a malformed file raises (GetModel); otherwise it is reported in `error` (List)."""
        state, load_error = self.manager.state(spec.id)
        model = models_pb2.Model(
            id=spec.id,
            load_state=LOAD_STATES[state],
            pinned=spec.pinned,
            n_gpu_layers=spec.n_gpu_layers,
            servable=self.factory.servable(spec),
            error=load_error,
            threads=self.manager.threads(spec.id) or spec.threads,
        )
        try:
            header = self.registry.header(spec)
            # A loaded model reports the file it was loaded from, even if that file changed since.
            model.fingerprint = self.manager.fingerprint(spec.id) or fingerprint(spec.path)
            model.modified_unix = int(spec.path.stat().st_mtime)
        except MinervaError as exc:
            if strict:
                raise
            model.error = exc.message
            model.load_state = models_pb2.LOAD_STATE_FAILED
            return model
        model.metadata.CopyFrom(metadata_to_pb(header.metadata))
        model.servable = self.factory.servable(spec, header)
        stats = self.manager.stats(spec.id)
        if stats is not None:
            model.stats.CopyFrom(stats_to_pb(stats))
            model.memory_bytes = self.manager.memory_bytes(spec.id)
            model.expires_unix = self.manager.expires_at(spec.id) or 0.0
        sizing = self.manager.sizing(spec, header)
        model.context_size = sizing.context_size
        model.slots = sizing.slots
        model.kv_cache_tokens = sizing.kv_cache_tokens
        model.queue_size = self.factory.queue_size
        return model

    def header(self, spec: ModelSpec, with_arrays: bool) -> tuple[str, str]:
        """(the chat template the server applies, the header key/values as JSON text)."""
        header = self.registry.header(spec)
        template = select_template(
            model_template=header.chat_template,
            architecture=header.metadata.architecture,
            override=spec.chat_template,
        )
        values = header_values(spec.path, header, with_arrays)
        return template, json.dumps(values, ensure_ascii=False, default=str)

    def list_all(self, compact: bool = False) -> models_pb2.ListModelsResponse:
        self.registry.rescan()
        models = [self.describe(s, strict=False) for s in self.registry.specs()]
        return models_pb2.ListModelsResponse(
            models=models, compact=compact_listing(models) if compact else ""
        )


class ModelServicer(models_pb2_grpc.ModelServiceServicer):
    def __init__(self, catalog: ModelCatalog) -> None:
        self._catalog = catalog

    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.ListModelsResponse:
        # Scanning the directory and cold header reads are file I/O: off the event loop.
        return await asyncio.to_thread(self._catalog.list_all, request.compact)

    async def GetModel(
        self, request: models_pb2.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.GetModelResponse:
        spec = self._catalog.registry.get(request.model_id)
        model = await asyncio.to_thread(self._catalog.describe, spec, strict=True)
        response = models_pb2.GetModelResponse(model=model)
        if request.with_header:
            response.chat_template, response.header_json = await asyncio.to_thread(
                self._catalog.header, spec, request.with_header_arrays
            )
        return response

    async def LoadModel(
        self, request: models_pb2.LoadModelRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[models_pb2.LoadModelResponse]:
        spec = self._catalog.registry.get(request.model_id)
        keep_alive = keep_alive_from_pb(request)
        context_size = context_size_from_pb(request)
        threads = threads_from_pb(request)
        async for event in self._catalog.manager.load(spec.id, keep_alive, context_size):
            message = progress_to_pb(event)
            if event.stage is LoadStage.READY:
                if threads is not None:
                    self._catalog.manager.set_threads(spec.id, threads)
                message.model.CopyFrom(self._catalog.describe(spec, strict=True))
            yield message

    async def UnloadModel(
        self, request: models_pb2.UnloadModelRequest, context: grpc.aio.ServicerContext
    ) -> models_pb2.UnloadModelResponse:
        self._catalog.registry.get(request.model_id)
        was_loaded = await self._catalog.manager.unload(request.model_id)
        return models_pb2.UnloadModelResponse(was_loaded=was_loaded)
