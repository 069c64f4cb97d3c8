"""The one gRPC status -> HTTP table, the OpenAI error envelope, and the boundary translator."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web
from minerva.v1.ratelimit import HEADER_PREFIX, RETRY_AFTER

log = logging.getLogger(__name__)

# Seconds a client should wait after a 429 (the model's queue was full).
RETRY_AFTER_SECONDS = 1
PARAM_METADATA_KEY = "minerva-param"
CORE_UNAVAILABLE = "the model server is unavailable; retry shortly"


@dataclass(frozen=True)
class HttpError:
    """How one gRPC status code is shown to an OpenAI client."""

    status: int
    type: str
    code: str


_INVALID = "invalid_request_error"
_SERVER = "server_error"

# grpc-gateway's HTTPStatusFromCode, with OpenAI error types and codes.
STATUS_TABLE: dict[grpc.StatusCode, HttpError] = {
    grpc.StatusCode.CANCELLED: HttpError(499, _INVALID, "cancelled"),
    grpc.StatusCode.UNKNOWN: HttpError(500, _SERVER, "unknown"),
    grpc.StatusCode.INVALID_ARGUMENT: HttpError(400, _INVALID, "invalid_value"),
    grpc.StatusCode.DEADLINE_EXCEEDED: HttpError(504, _SERVER, "timeout"),
    grpc.StatusCode.NOT_FOUND: HttpError(404, _INVALID, "model_not_found"),
    grpc.StatusCode.ALREADY_EXISTS: HttpError(409, _INVALID, "already_exists"),
    grpc.StatusCode.PERMISSION_DENIED: HttpError(403, "permission_error", "permission_denied"),
    grpc.StatusCode.UNAUTHENTICATED: HttpError(401, _INVALID, "invalid_api_key"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: HttpError(429, "rate_limit_error", "rate_limit_exceeded"),
    grpc.StatusCode.FAILED_PRECONDITION: HttpError(400, _INVALID, "failed_precondition"),
    grpc.StatusCode.ABORTED: HttpError(409, _INVALID, "aborted"),
    grpc.StatusCode.OUT_OF_RANGE: HttpError(400, _INVALID, "out_of_range"),
    grpc.StatusCode.UNIMPLEMENTED: HttpError(501, _SERVER, "unimplemented"),
    grpc.StatusCode.INTERNAL: HttpError(500, _SERVER, "internal_error"),
    grpc.StatusCode.UNAVAILABLE: HttpError(503, _SERVER, "core_unavailable"),
    grpc.StatusCode.DATA_LOSS: HttpError(500, _SERVER, "data_loss"),
}
_FALLBACK = HttpError(500, _SERVER, "internal_error")

# The core's request fields (trailing metadata "minerva-param") -> OpenAI parameter names.
_PARAM_NAMES = {
    "model_id": "model",
    "prompt": "prompt",
    "text": "prompt",
    "token_ids": "prompt",
    "messages": "messages",
    "inputs": "input",
    "session_id": "x-session-affinity",
}
# Tool fields: OpenAI nests a tool's and a call's name and arguments under "function".
_TOOL_PARAMS = (
    (re.compile(r"^(tools\[\d+\])\.(name|description|parameters)$"), r"\1.function.\2"),
    (re.compile(r"^(messages\[\d+\]\.tool_calls\[\d+\])\.(name|arguments)$"), r"\1.function.\2"),
    (re.compile(r"^tool_choice\.function_name$"), "tool_choice"),
)
# Sampling fields whose OpenAI names differ on both endpoints.
_SAMPLING_NAMES = {"json_schema": "response_format"}
# Legacy /v1/completions (its input is "prompt") takes the count of rivals as `logprobs`.
_COMPLETION_SAMPLING_NAMES = {"top_logprobs": "logprobs"}


class ApiError(Exception):
    """An error to answer with the OpenAI envelope; raised by validation and by translation."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = _INVALID,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        # E.g. a rate limit's retry-after and x-ratelimit-* facts.
        self.extra_headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)

    def headers(self) -> dict[str, str]:
        out = {}
        if self.status in (429, 503):  # overloaded, draining, or the core away: try again soon
            out["Retry-After"] = str(RETRY_AFTER_SECONDS)
        if "retry-after" in self.extra_headers:
            out.pop("Retry-After", None)
        return {**out, **self.extra_headers}


class BadRequest(ApiError):
    """A request the bridge itself rejects before calling the core (always 400)."""

    def __init__(self, message: str, param: str | None = None, *, code: str | None = None) -> None:
        super().__init__(
            400, message, param=param, code=code or ("invalid_value" if param else None)
        )


def error_body(message: str, type: str, param: str | None, code: str | None) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def is_ollama_path(path: str) -> bool:
    """Where errors take Ollama's shape: its /api/ routes and its root."""
    return path == "/" or path.startswith("/api/")


def error_response(error: ApiError, *, ollama: bool = False) -> web.Response:
    """The error in OpenAI's envelope, or in Ollama's {"error": message} on its routes."""
    body = {"error": error.message} if ollama else error.body()
    return web.json_response(body, status=error.status, headers=error.headers())


def openai_param(core_param: str | None, *, input_name: str = "prompt") -> str | None:
    """Names the OpenAI parameter for the core's field; `input_name` says what text/ids were."""
    if not core_param:
        return None
    if core_param.startswith("sampling."):
        name = core_param.removeprefix("sampling.")
        name = _SAMPLING_NAMES.get(name, name)
        return _COMPLETION_SAMPLING_NAMES.get(name, name) if input_name == "prompt" else name
    for pattern, replacement in _TOOL_PARAMS:
        if pattern.match(core_param):
            return pattern.sub(replacement, core_param)
    name = _PARAM_NAMES.get(core_param, core_param)
    return input_name if name in ("prompt", "input") else name


def from_rpc_error(error: grpc.aio.AioRpcError, address: str, input_name: str) -> ApiError:
    """Builds the HTTP error for a failed gRPC call from its status code and metadata only."""
    row = STATUS_TABLE.get(error.code(), _FALLBACK)
    details = error.details() or error.code().name
    trailing = _trailing(error)
    if error.code() == grpc.StatusCode.UNAVAILABLE:
        details = core_unavailable(address, details)
    elif row.status >= 500:
        log.warning("core call failed: %s: %s", error.code().name, details)
    param = openai_param(trailing.get(PARAM_METADATA_KEY), input_name=input_name)
    facts = {k: v for k, v in trailing.items() if k == RETRY_AFTER or k.startswith(HEADER_PREFIX)}
    return ApiError(row.status, details, type=row.type, param=param, code=row.code, headers=facts)


def core_unavailable(address: str, details: str) -> str:
    """Logs where the core was and why it failed (the operator's business; gRPC's details
    name addresses), and returns what clients are told."""
    log.warning("core unavailable at %s: %s", address, details)
    return CORE_UNAVAILABLE


def _trailing(error: grpc.aio.AioRpcError) -> dict[str, str]:
    return {
        key: value if isinstance(value, str) else value.decode()
        for key, value in error.trailing_metadata() or ()
    }


@asynccontextmanager
async def translate_grpc_errors(address: str, input_name: str = "prompt") -> AsyncIterator[None]:
    """Turns any gRPC failure inside the block into an ApiError (the boundary translator)."""
    try:
        yield
    except grpc.aio.AioRpcError as error:
        raise from_rpc_error(error, address, input_name) from error


def http_exception_error(exc: web.HTTPException) -> ApiError:
    """aiohttp's own errors (404 route, 405, 413 body too large) in the OpenAI envelope."""
    code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
    message = exc.text or exc.reason
    if exc.status == 413:
        message = f"request body too large: {exc.text}"
    kind = _INVALID if exc.status < 500 else _SERVER
    return ApiError(exc.status, message, type=kind, code=code.get(exc.status))


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Renders every error, ours or aiohttp's, in the route's dialect (the OpenAI envelope, or
    Ollama's on its routes); never a bare 500 page."""
    ollama = is_ollama_path(request.path)
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except ApiError as error:
        return error_response(error, ollama=ollama)
    except ConnectionResetError:
        raise  # the client is gone: there is nobody to answer
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(http_exception_error(exc), ollama=ollama)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        internal = ApiError(500, "internal error in the bridge", type=_SERVER)
        return error_response(internal, ollama=ollama)
