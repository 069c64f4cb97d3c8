"""Ollama's errors: {"error": "..."} with its status codes, from one gRPC status table."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc

from rest_bridge.errors import ApiError, core_unavailable

# The Ollama dialect's gRPC status -> HTTP table (Ollama answers 503 when it is busy).
STATUS_TABLE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 503,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNIMPLEMENTED: 501,
}


@asynccontextmanager
async def ollama_errors(address: str, model: str = "") -> AsyncIterator[None]:
    """Any gRPC failure inside the block as an Ollama error; an unknown model is Ollama's
    404 "model 'x' not found"."""
    try:
        yield
    except grpc.aio.AioRpcError as error:
        status = STATUS_TABLE.get(error.code(), 500)
        message = error.details() or error.code().name
        if error.code() == grpc.StatusCode.NOT_FOUND and model:
            message = f"model '{model}' not found"
        elif error.code() == grpc.StatusCode.UNAVAILABLE:
            message = core_unavailable(address, message)
        raise ApiError(status, message) from error
