"""Assembles the gRPC server: servicers, health, reflection, interceptors, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from minerva.v1 import inference_pb2, inference_pb2_grpc, models_pb2, models_pb2_grpc
from minerva.v1.exposure import ExposureError, read_pem
from minerva.v1.ratelimit import RateLimiter

from core.engine.llama_backend import init_backend
from core.engine_factory import EngineFactory
from core.errors import ConfigError
from core.importer.cache import ImportCache
from core.importer.importer import Importer
from core.inference import Inference, RequestLimits
from core.manager import ModelManager
from core.model_slot import LoadState
from core.registry import Registry
from core.services.auth import AuthInterceptor, KeyRing
from core.services.drain import DrainInterceptor
from core.services.inference_service import InferenceServicer
from core.services.model_service import ModelCatalog, ModelServicer
from core.services.ratelimit import RateLimitInterceptor
from core.services.request_id import RequestIdInterceptor
from core.services.status import ErrorInterceptor
from core.settings import Settings, import_cache_dir

log = logging.getLogger(__name__)

SERVICES = (
    models_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name,
    inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name,
)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# After aborting, how long streams get to send their final message before connections close.
_ABORT_WAIT_S = 2.0
_MAX_CONNECTION_AGE_MS = 5 * 60 * 1000


def model_health_name(model_id: str) -> str:
    """The health service name that reports one model: SERVING while it is loaded."""
    return f"model/{model_id}"


@dataclass
class CoreServer:
    """A started core; `port` is the bound port (useful with :0)."""

    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    registry: Registry
    manager: ModelManager
    drain: DrainInterceptor
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self, grace: float) -> None:
        """Refuse new calls, let in-flight ones finish within `grace` seconds, free the models."""
        await self.health.enter_graceful_shutdown()
        self.drain.begin()
        if not await self.drain.wait_idle(grace):
            log.warning("grace period over: stopping %d call(s) in flight", self.drain.active)
            # Generations end with FINISH_REASON_CANCELLED finals instead of a cut connection.
            self.manager.abort_all()
            await self.drain.wait_idle(_ABORT_WAIT_S)
        await self.server.stop(0)
        for task in list(self._tasks):
            task.cancel()
        await self.manager.close()


async def start(settings: Settings) -> CoreServer:
    init_backend()
    registry = Registry(settings)
    factory = EngineFactory(
        settings.default_context_size,
        settings.queue_size,
        settings.prompt_cache_mb * 2**20,
        importer=Importer(ImportCache(import_cache_dir(settings))),
    )
    health = health_aio.HealthServicer()
    core: CoreServer | None = None

    def on_state(model_id: str, state: LoadState) -> None:
        if core is not None:
            core.spawn(
                health.set(
                    model_health_name(model_id), SERVING if state is LoadState.LOADED else NOT_SERVING
                )
            )

    manager = ModelManager(
        registry,
        factory,
        memory_budget_bytes=settings.memory_budget_mb * 2**20,
        idle_ttl_s=settings.idle_ttl_s,
        on_state=on_state,
    )
    limit = settings.max_message_mb * 2**20
    drain = DrainInterceptor()
    # Order matters: the request id is set around everything (errors are logged with it), the
    # error interceptor wraps the drain refusal, and auth is checked before work.
    server = grpc.aio.server(
        interceptors=[
            RequestIdInterceptor(),
            ErrorInterceptor(),
            drain,
            AuthInterceptor(KeyRing(settings.api_keys, settings.admin_keys)),
            *_rate_limits(settings),
        ],
        options=[
            ("grpc.max_receive_message_length", limit),
            # Replies (embeddings above all) may outgrow requests; the bridge accepts this much.
            ("grpc.max_send_message_length", max(64 * 2**20, 4 * limit)),
            # Connections are closed gracefully after a while (streams in flight finish), so
            # clients of a DNS name (the bridge on a Kubernetes headless Service) resolve it
            # again and find cores added since.
            ("grpc.max_connection_age_ms", _MAX_CONNECTION_AGE_MS),
        ],
    )
    models_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelServicer(ModelCatalog(registry, manager, factory)), server
    )
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(
        InferenceServicer(
            Inference(
                registry,
                manager,
                RequestLimits(settings.max_tokens_cap, settings.max_generation_s),
            )
        ),
        server,
    )
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (*SERVICES, reflection.SERVICE_NAME, "grpc.health.v1.Health"), server
    )
    port = _bind(server, settings)
    await server.start()
    core = CoreServer(server, port, health, registry, manager, drain)
    for name in ("", *SERVICES):
        await health.set(name, SERVING)
    for spec in registry.specs():
        await health.set(model_health_name(spec.id), NOT_SERVING)
    core.spawn(manager.run_reaper())
    await manager.load_pinned()
    return core


async def serve(settings: Settings, stop_event: asyncio.Event) -> None:
    core = await start(settings)
    host = settings.listen.rsplit(":", 1)[0]
    log.info("minerva core listening on %s:%d", host, core.port)
    with contextlib.suppress(asyncio.CancelledError):
        await stop_event.wait()
    log.info("shutting down: draining for up to %.0f s", settings.shutdown_grace_s)
    await core.stop(settings.shutdown_grace_s)
    log.info("stopped")


def _rate_limits(settings: Settings) -> list[grpc.aio.ServerInterceptor]:
    """The rate-limit interceptor when any limit is configured (after auth: keys are valid)."""
    limiter = RateLimiter(settings.rate_limit, dict(settings.key_rate_limits))
    if not limiter.enabled:
        return []
    keyed = bool(settings.api_keys or settings.admin_keys)
    return [RateLimitInterceptor(limiter, keyed)]


def _bind(server: grpc.aio.Server, settings: Settings) -> int:
    """The listening port: TLS (mutual with a client CA) when a certificate is configured."""
    if settings.tls_cert is None or settings.tls_key is None:
        return server.add_insecure_port(settings.listen)
    try:
        cert = read_pem(settings.tls_cert, "TLS certificate")
        key = read_pem(settings.tls_key, "TLS private key")
        client_ca = read_pem(settings.tls_client_ca, "TLS client CA")
    except ExposureError as exc:
        raise ConfigError(str(exc)) from exc
    assert cert is not None and key is not None
    credentials = grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
    return server.add_secure_port(settings.listen, credentials)
