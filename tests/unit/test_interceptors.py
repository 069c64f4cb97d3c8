"""Auth and error interceptors: refusals raise domain errors, one table turns them into statuses."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from minerva.v1 import inference_pb2

from core.errors import Unauthenticated
from core.services.auth import AuthInterceptor, KeyRing, _administers
from core.services.status import ErrorInterceptor

KEY = "k-secret"


class Details(grpc.HandlerCallDetails):
    def __init__(self, method: str, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.method = method
        self.invocation_metadata = metadata


class FakeContext:
    """Records aborts and raises like grpc's does; has none of grpc's private attributes."""

    def __init__(self) -> None:
        self.aborts: list[tuple[grpc.StatusCode, str]] = []

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborts.append((code, details))
        raise grpc.aio.AbortError()

    def set_trailing_metadata(self, _metadata: Any) -> None:
        pass


async def echo(request: bytes, _context: Any) -> bytes:
    return request


async def echo_twice(request: bytes, _context: Any) -> AsyncIterator[bytes]:
    yield request
    yield request


async def boom(_request: bytes, _context: Any) -> bytes:
    raise RuntimeError("secret detail")


HANDLERS = {
    "Echo": grpc.unary_unary_rpc_method_handler(echo),
    "EchoTwice": grpc.unary_stream_rpc_method_handler(echo_twice),
    "Boom": grpc.unary_unary_rpc_method_handler(boom),
}


def continuation_for(
    handler: grpc.RpcMethodHandler,
) -> Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]]:
    async def continuation(_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return handler

    return continuation


async def test_denied_unary_raises_unauthenticated_instead_of_aborting() -> None:
    handler = await AuthInterceptor(KeyRing((KEY,))).intercept_service(
        continuation_for(HANDLERS["Echo"]), Details("/t.Svc/Echo")
    )
    context = FakeContext()
    with pytest.raises(Unauthenticated):
        await handler.unary_unary(b"hi", context)
    assert context.aborts == []


async def test_denied_stream_raises_unauthenticated_instead_of_aborting() -> None:
    handler = await AuthInterceptor(KeyRing((KEY,))).intercept_service(
        continuation_for(HANDLERS["EchoTwice"]), Details("/t.Svc/EchoTwice")
    )
    context = FakeContext()
    with pytest.raises(Unauthenticated):
        async for _ in handler.unary_stream(b"hi", context):
            pass
    assert context.aborts == []


async def test_unexpected_error_log_names_the_method(caplog: pytest.LogCaptureFixture) -> None:
    handler = await ErrorInterceptor().intercept_service(
        continuation_for(HANDLERS["Boom"]), Details("/t.Svc/Boom")
    )
    context = FakeContext()
    with (
        caplog.at_level(logging.ERROR, logger="core.services.status"),
        pytest.raises(grpc.aio.AbortError),
    ):
        await handler.unary_unary(b"hi", context)
    assert context.aborts == [(grpc.StatusCode.INTERNAL, "internal error; see the server log")]
    assert [r.getMessage() for r in caplog.records] == ["unexpected error in /t.Svc/Boom"]


async def test_through_a_real_server_refusals_become_unauthenticated() -> None:
    server = grpc.aio.server(interceptors=[ErrorInterceptor(), AuthInterceptor(KeyRing((KEY,)))])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Svc", HANDLERS),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    unary = channel.unary_unary("/t.Svc/Echo")
    stream = channel.unary_stream("/t.Svc/EchoTwice")
    good = (("authorization", f"Bearer {KEY}"),)
    try:
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await unary(b"hi", metadata=metadata)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "API key" in (err.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in stream(b"hi", metadata=metadata):
                    pass
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert await unary(b"hi", metadata=good) == b"hi"
        assert [m async for m in stream(b"hi", metadata=good)] == [b"hi", b"hi"]
    finally:
        await channel.close()
        await server.stop(0)


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (inference_pb2.ChatRequest(model_id="m"), None),
        (inference_pb2.ChatRequest(model_id="m", keep_alive_seconds=60), None),
        (inference_pb2.ChatRequest(model_id="m", keep_alive_seconds=0), "keep_alive_seconds"),
        (inference_pb2.GenerateRequest(model_id="m", context_size=4096), "context_size"),
        (inference_pb2.EmbedRequest(model_id="m", threads=1), "threads"),
        (inference_pb2.TokenizeRequest(model_id="m", text="hi"), None),
    ],
)
def test_what_needs_an_admin_key(request_: object, field: str | None) -> None:
    assert _administers(request_) == field
