"""Newline-delimited JSON streams (Ollama's): headers only after the first object; a failure
after that is an {"error": ...} line, as Ollama sends it."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from aiohttp import web

from rest_bridge.errors import ApiError

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/x-ndjson"
# Line breaks to str.splitlines() that JSON leaves raw inside strings: a client that splits the
# stream with it (httpx's iter_lines, so the ollama package) would cut such an object in two.
# Escaped as Go's encoder (Ollama's) escapes U+2028 and U+2029.
_SPLITLINES_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def encode_line(payload: dict[str, Any]) -> bytes:
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return text.translate(_SPLITLINES_BREAKS).encode() + b"\n"


async def stream_lines(
    request: web.Request, lines: AsyncGenerator[dict[str, Any], None]
) -> web.StreamResponse:
    """Sends `lines` as NDJSON. An error before the first line propagates (a real HTTP status);
    one after it becomes a last {"error": ...} line."""
    async with aclosing(lines):
        first = await anext(lines)
        response = web.StreamResponse(status=200, headers={"Content-Type": CONTENT_TYPE})
        await response.prepare(request)
        await response.write(encode_line(first))
        try:
            async for line in lines:
                await response.write(encode_line(line))
        except ApiError as error:
            log.info("stream ended by an error after headers: %s %s", error.status, error.message)
            await response.write(encode_line({"error": error.message}))
        except ConnectionResetError:
            raise
        except Exception:
            log.exception("stream failed after headers were sent")
            await response.write(encode_line({"error": "internal error in the bridge"}))
        await response.write_eof()
        return response
