"""GET /health: the bridge is up; 200 only while the core answers SERVING (never needs a key, so
it tells nothing about the deployment, such as where the core is)."""

from __future__ import annotations

import logging

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2

from rest_bridge.app_keys import CLIENT

log = logging.getLogger(__name__)

# A health probe must answer quickly even when the core hangs.
CHECK_TIMEOUT_S = 2.0


async def health(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    try:
        reply = await client.health.Check(
            health_pb2.HealthCheckRequest(service=""),
            metadata=client.metadata,
            timeout=CHECK_TIMEOUT_S,
        )
    except grpc.aio.AioRpcError as error:
        log.debug("core health check failed: %s", error.code().name)
        return web.json_response(
            {
                "status": "unavailable",
                "core": error.code().name,
                "message": "core unavailable",
            },
            status=503,
        )
    state = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    ok = reply.status == health_pb2.HealthCheckResponse.SERVING
    return web.json_response(
        {"status": "ok" if ok else "unavailable", "core": state}, status=200 if ok else 503
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/health", health)
