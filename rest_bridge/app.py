"""The aiohttp application factory: routes, middlewares, state and the core channel's lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.typedefs import Middleware

from rest_bridge import (
    chat,
    completions,
    core_client,
    embeddings,
    health,
    metrics,
    models,
    ollama,
    utility,
)
from rest_bridge.app_keys import CLIENT, DRAIN, METRICS, SETTINGS
from rest_bridge.auth import auth_middleware
from rest_bridge.core_client import CoreClient
from rest_bridge.drain import Drain
from rest_bridge.errors import error_middleware
from rest_bridge.request_id import echo_request_id, request_id_middleware
from rest_bridge.settings import Settings

ENDPOINT_FAMILIES = (models, chat, completions, embeddings, utility, health, metrics, ollama)


def create_app(settings: Settings, client: CoreClient | None = None) -> web.Application:
    """Builds the bridge; without `client` the app opens (and closes) its own channel."""
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
    # aiohttp answers 413 on its own past client_max_size; error_middleware wraps it.
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = counters
    app[DRAIN] = drain
    app.on_response_prepare.append(echo_request_id)
    if client is not None:
        app[CLIENT] = client
    else:
        app.cleanup_ctx.append(_core_channel)
    for family in ENDPOINT_FAMILIES:
        family.setup(app)
    return app


async def _core_channel(app: web.Application) -> AsyncIterator[None]:
    client = core_client.connect(app[SETTINGS])
    app[CLIENT] = client
    yield
    await client.close()
