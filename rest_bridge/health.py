"""GET /health: the bridge is up; 200 while at least one core answers SERVING (never needs a
key, so it tells nothing about the deployment, such as where or how many the cores are)."""

from __future__ import annotations

import asyncio
import logging

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2

from rest_bridge import routing
from rest_bridge.core_client import CoreClient

log = logging.getLogger(__name__)

# A health probe must answer quickly even when a core hangs.
CHECK_TIMEOUT_S = 2.0
_SERVING = health_pb2.HealthCheckResponse.SERVING


async def _check(client: CoreClient) -> tuple[str, bool | None]:
    """(the core's state or error code, whether it serves; None when it did not answer)."""
    try:
        reply = await client.health.Check(
            health_pb2.HealthCheckRequest(service=""),
            metadata=client.metadata,
            timeout=CHECK_TIMEOUT_S,
        )
    except grpc.aio.AioRpcError as error:
        log.debug("core %s health check failed: %s", client.address, error.code().name)
        return error.code().name, None
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status), reply.status == _SERVING


async def health(request: web.Request) -> web.Response:
    results = await asyncio.gather(*(_check(client) for client in routing.cores(request)))
    serving = [state for state, ok in results if ok]
    if serving:
        return web.json_response({"status": "ok", "core": serving[0]})
    state, answered = results[0]
    body = {"status": "unavailable", "core": state}
    if answered is None:
        body["message"] = "core unavailable"
    return web.json_response(body, status=503)


def setup(app: web.Application) -> None:
    app.router.add_get("/health", health)
