"""The aiohttp application factory: routes, middlewares, state and the core channel's lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware
from minerva.v1.ratelimit import RateLimiter

from rest_bridge import (
    chat,
    completions,
    core_client,
    embeddings,
    health,
    metrics,
    models,
    ollama,
    openapi,
    utility,
)
from rest_bridge.admission import Admission, refresher
from rest_bridge.app_keys import ADMISSION, DRAIN, METRICS, ROUTER, SETTINGS
from rest_bridge.auth import auth_middleware
from rest_bridge.core_client import CoreClient
from rest_bridge.drain import Drain
from rest_bridge.errors import error_middleware
from rest_bridge.ratelimit import add_rate_headers, rate_limit_middleware
from rest_bridge.request_id import echo_request_id, request_id_middleware
from rest_bridge.routing import Router, split_targets
from rest_bridge.settings import Settings

ENDPOINT_FAMILIES = (
    models, chat, completions, embeddings, utility, health, metrics, ollama, openapi
)


def create_app(
    settings: Settings, client: CoreClient | Sequence[CoreClient] | None = None
) -> web.Application:
    """Builds the bridge; without `client` (one core's stubs, or several cores') the app opens
    (and closes) one channel per --core target."""
    counters = metrics.BridgeMetrics()
    # Outermost the request id (every log line carries it), then the metrics, which count the
    # status each client got, errors included.
    drain = Drain()
    middlewares: list[Middleware] = [
        request_id_middleware,
        metrics.metrics_middleware(counters),
        error_middleware,
        drain.middleware(),
    ]
    if settings.api_keys or settings.admin_keys:
        middlewares.append(
            auth_middleware(settings.api_keys, settings.admin_keys, settings.core_admin_key)
        )
    limiter = RateLimiter(settings.rate_limit, dict(settings.key_rate_limits))
    if limiter.enabled:  # after auth: only valid keys get buckets
        keyed = bool(settings.api_keys or settings.admin_keys)
        middlewares.append(rate_limit_middleware(limiter, keyed))
    # aiohttp answers 413 on its own past client_max_size; error_middleware wraps it.
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = counters
    app[DRAIN] = drain
    app.on_response_prepare.append(echo_request_id)
    app.on_response_prepare.append(add_rate_headers)
    app[ADMISSION] = Admission()
    if client is not None:
        _use_cores(app, [client] if isinstance(client, CoreClient) else list(client))
    else:
        app.cleanup_ctx.append(_core_channels)
    app.cleanup_ctx.append(refresher)  # after the channels: it reads the cores' model lists
    for family in ENDPOINT_FAMILIES:
        family.setup(app)
    return app


def _use_cores(app: web.Application, clients: list[CoreClient]) -> None:
    app[ROUTER] = Router(clients, app[ADMISSION])


async def _core_channels(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    clients = [core_client.connect(settings, t) for t in split_targets(settings.core_address)]
    _use_cores(app, clients)
    yield
    for client in clients:
        await client.close()
