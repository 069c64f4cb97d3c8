"""The bridge's connections to its cores: one gRPC channel per --core target (round_robin with
client-side health checking), its stubs, and the auth metadata."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc
from minerva.v1 import inference_pb2_grpc, models_pb2_grpc, request_ids
from minerva.v1.exposure import read_pem

from rest_bridge.auth import core_key_override
from rest_bridge.settings import MIB, Settings

# Responses (embeddings of many inputs) can outgrow the request that asked for them.
MIN_RECEIVE_BYTES = 64 * MIB
# Slack over the HTTP body limit for the protobuf framing of the same content.
SEND_OVERHEAD_BYTES = 1 * MIB
# round_robin over whatever the target resolves to (one address, or a dns:/// name's several),
# each address used only while its grpc.health.v1 status for the server ("") is SERVING: a core
# that drains or dies leaves the rotation at once and rejoins when it serves again.
SERVICE_CONFIG = json.dumps(
    {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}
)


@dataclass
class CoreClient:
    """Stubs for the core's services plus what every call needs; tests build it from fakes."""

    address: str
    models: Any
    inference: Any
    health: Any
    metadata: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    channel: grpc.aio.Channel | None = None

    def connectivity(self) -> grpc.ChannelConnectivity:
        """The channel's state (asking it to connect when idle); READY for injected stubs."""
        if self.channel is None:
            return grpc.ChannelConnectivity.READY
        return self.channel.get_state(try_to_connect=True)

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()


def auth_metadata(core_api_key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {core_api_key}"),) if core_api_key else ()


def _call_context(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    """This request's id, and an admin caller's core key in place of the default one."""
    rid, admin_key = request_ids.current.get(), core_key_override.get()
    if rid == "-" and admin_key is None:
        return details
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    if rid != "-":
        metadata[request_ids.HEADER] = rid
    if admin_key is not None:
        metadata["authorization"] = f"Bearer {admin_key}"
    return details._replace(metadata=metadata)


class _UnaryUnaryContext(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_call_context(details), request)


class _UnaryStreamContext(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        return await continuation(_call_context(details), request)


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    return [_UnaryUnaryContext(), _UnaryStreamContext()]


def channel_options(max_body_bytes: int) -> list[tuple[str, int | str]]:
    """Message limits that agree with the HTTP body limit, a quick reconnect, and round_robin
    with health checking."""
    return [
        ("grpc.service_config", SERVICE_CONFIG),
        ("grpc.max_send_message_length", max_body_bytes + SEND_OVERHEAD_BYTES),
        ("grpc.max_receive_message_length", max(MIN_RECEIVE_BYTES, 4 * max_body_bytes)),
        # A restarted core is found again within a second instead of gRPC's default ~2 minutes.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


def core_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """TLS to the core when a CA is configured (mutual with a client certificate); read at
    start-up, so a missing file stops the bridge before it serves."""
    if settings.core_tls_ca is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(settings.core_tls_ca, "core TLS CA"),
        private_key=read_pem(settings.core_tls_key, "core TLS client key"),
        certificate_chain=read_pem(settings.core_tls_cert, "core TLS client certificate"),
    )


def connect(settings: Settings, target: str | None = None) -> CoreClient:
    """Opens a lazy channel to `target` (default: the whole --core value as one gRPC target; no
    I/O until the first call); must run inside the event loop."""
    address = settings.core_address if target is None else target
    options = channel_options(settings.max_body_bytes)
    credentials = core_credentials(settings)
    if credentials is None:
        channel = grpc.aio.insecure_channel(
            address, options=options, interceptors=client_interceptors()
        )
    else:
        channel = grpc.aio.secure_channel(
            address, credentials, options=options, interceptors=client_interceptors()
        )
    return CoreClient(
        address=address,
        models=models_pb2_grpc.ModelServiceStub(channel),
        inference=inference_pb2_grpc.InferenceServiceStub(channel),
        health=health_pb2_grpc.HealthStub(channel),
        metadata=auth_metadata(settings.core_api_key),
        channel=channel,
    )
