"""Server-sent events: headers only after the first event, errors after that as an error event."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from aiohttp import web

from rest_bridge.errors import ApiError, error_body

log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    # Proxies such as nginx would otherwise buffer the stream and defeat its purpose.
    "X-Accel-Buffering": "no",
}


def encode_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


async def stream_events(
    request: web.Request, events: AsyncGenerator[dict[str, Any], None]
) -> web.StreamResponse:
    """Sends `events` as SSE. An error before the first event propagates (a real HTTP status);
    one after it becomes `data: {"error": ...}` then `data: [DONE]`."""
    async with aclosing(events):
        return await _send(request, events)


async def _send(
    request: web.Request, events: AsyncGenerator[dict[str, Any], None]
) -> web.StreamResponse:
    first = await anext(events, None)
    response = web.StreamResponse(status=200, headers=SSE_HEADERS)
    await response.prepare(request)
    if first is not None:
        await response.write(encode_event(first))
        await _write_rest(response, events)
    await response.write(DONE)
    await response.write_eof()
    return response


async def _write_rest(
    response: web.StreamResponse, events: AsyncGenerator[dict[str, Any], None]
) -> None:
    try:
        async for event in events:
            await response.write(encode_event(event))
        return
    except ApiError as error:
        log.info("stream ended by an error after headers: %s %s", error.status, error.message)
        body = error.body()
    except ConnectionResetError:
        raise  # the client is gone: nothing more to tell it
    except Exception:
        log.exception("stream failed after headers were sent")
        body = error_body("internal error in the bridge", "server_error", None, "internal_error")
    await response.write(encode_event(body))
