"""`x-request-id` on every request: the client's (when well-formed) or a new one, set for this
request's logs and gRPC calls (core_client's interceptor sends it), and echoed on every
response, streams and errors included."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from minerva.v1 import request_ids

REQUEST_ID = web.RequestKey("request_id", str)
access_log = logging.getLogger("rest_bridge.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: sets the id, and writes the access log line (method, path, status, time)
    with it once the response, a stream included, is done."""
    rid = request_ids.accept_or_new(request.headers.get(request_ids.HEADER))
    request[REQUEST_ID] = rid
    token = request_ids.current.set(rid)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        ms = (time.perf_counter() - started) * 1000
        access_log.info("%s %s %d %.1f ms", request.method, request.path, status, ms)
        request_ids.current.reset(token)


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: runs before any response's headers go out, streamed ones too."""
    rid = request.get(REQUEST_ID)
    if rid is None:  # refused before the middleware ran (e.g. a malformed request line)
        rid = request_ids.accept_or_new(request.headers.get(request_ids.HEADER))
    response.headers[request_ids.HEADER] = rid
