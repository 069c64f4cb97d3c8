"""Calls other than generation streams, routed by model over several fake cores: each is made
once more on another core that lists the model when the first answers UNAVAILABLE (LoadModel:
before its first message), never on another code and never a second time."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient
from minerva.v1 import models_pb2

from rest_bridge.app import create_app
from rest_bridge.app_keys import ROUTER
from rest_bridge.core_client import CoreClient
from rest_bridge.settings import Settings
from tests.bridge.conftest import MODEL_ID, FakeCore, rpc_error, sample_model

A, B, C = "127.0.0.1:50051", "127.0.0.1:50052", "127.0.0.1:50053"
OTHER = "gemma-3-270m"
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
CHAT_MESSAGES = [{"role": "user", "content": "Hi"}]

# (method, path, body, the RPC it makes)
ROUTES = [
    ("POST", "/v1/embeddings", {"model": MODEL_ID, "input": "Hi"}, "Embed"),
    ("POST", "/api/embed", {"model": MODEL_ID, "input": "Hi"}, "Embed"),
    ("POST", "/api/embeddings", {"model": MODEL_ID, "prompt": "Hi"}, "Embed"),
    ("POST", "/tokenize", {"model": MODEL_ID, "content": "Hi"}, "Tokenize"),
    ("POST", "/detokenize", {"model": MODEL_ID, "tokens": [72, 105]}, "Detokenize"),
    (
        "POST",
        "/apply-template",
        {"model": MODEL_ID, "messages": CHAT_MESSAGES},
        "ApplyChatTemplate",
    ),
    ("GET", f"/v1/models/{MODEL_ID}", None, "GetModel"),
    ("POST", "/api/show", {"model": MODEL_ID}, "GetModel"),
    ("POST", "/api/generate", {"model": MODEL_ID}, "LoadModel"),
    ("POST", "/api/chat", {"model": MODEL_ID, "messages": []}, "LoadModel"),
    ("POST", "/api/embed", {"model": MODEL_ID}, "LoadModel"),
]
ROUTE_IDS = [f"{method} {path} {rpc}" for method, path, _, rpc in ROUTES]


class Stub:
    """Stands in for one core's stub: counts each call by RPC and, with `error`, fails every
    one but ListModels (the router still learns the core's models); a LoadModel stream fails
    after `after` messages."""

    def __init__(self, inner: Any, error: Exception | None, after: int, calls: Counter[str]):
        self.inner, self.error, self.after, self.calls = inner, error, after, calls

    def __getattr__(self, rpc: str) -> Any:
        method = getattr(self.inner, rpc)
        if rpc == "ListModels":
            return method

        def call(request: Any, metadata: Any = ()) -> Any:
            self.calls[rpc] += 1
            if self.error is None:
                return method(request, metadata)
            return self._stream(method(request, metadata)) if rpc == "LoadModel" else self._fail()

        return call

    async def _fail(self) -> Any:
        assert self.error is not None
        raise self.error

    async def _stream(self, messages: AsyncIterator[Any]) -> AsyncIterator[Any]:
        assert self.error is not None
        sent = 0
        async for message in messages:
            if sent == self.after:
                break
            sent += 1
            yield message
        raise self.error


class Core:
    """One fake core at `address` listing the models (`loaded`: the router tries it before a
    core that has them unloaded), failing every call with `error` when given."""

    def __init__(
        self,
        address: str,
        *model_ids: str,
        loaded: bool = False,
        error: Exception | None = None,
        after: int = 0,
    ) -> None:
        self.address = address
        fake = FakeCore()
        fake.models.models = [sample_model(model_id) for model_id in model_ids]
        if not loaded:
            for listed in fake.models.models:
                listed.load_state = models_pb2.LOAD_STATE_UNLOADED
        self.calls: Counter[str] = Counter()
        self.client = CoreClient(
            address,
            models=Stub(fake.models, error, after, self.calls),
            inference=Stub(fake.inference, error, after, self.calls),
            health=fake.health,
        )


async def bridge_over(aiohttp_client: Any, *cores: Core) -> TestClient:
    """A bridge over the cores, once its router has learned every core's models."""
    settings = Settings(core_address=",".join(core.address for core in cores))
    bridge: TestClient = await aiohttp_client(create_app(settings, [c.client for c in cores]))
    router = bridge.app[ROUTER]
    for _ in range(500):
        if all(core.models for core in router.cores):
            return bridge
        await asyncio.sleep(0.01)
    raise AssertionError("the cores' models were never learned")


async def send(bridge: TestClient, method: str, path: str, body: Any) -> tuple[int, str, Any]:
    response = await bridge.request(method, path, json=body)
    return response.status, await response.text(), response.headers


def unavailable(address: str) -> Exception:
    # gRPC's own details name the address; clients must never see it.
    return rpc_error(UNAVAILABLE, f"failed to connect to all addresses; last error: {address}")


@pytest.mark.parametrize(("method", "path", "body", "rpc"), ROUTES, ids=ROUTE_IDS)
async def test_unavailable_is_answered_by_another_core(
    aiohttp_client: Any, method: str, path: str, body: Any, rpc: str
) -> None:
    first = Core(A, MODEL_ID, loaded=True, error=unavailable(A))
    second = Core(B, MODEL_ID)
    bridge = await bridge_over(aiohttp_client, first, second)
    status, text, _ = await send(bridge, method, path, body)
    assert status == 200, text
    assert (first.calls[rpc], second.calls[rpc]) == (1, 1)


@pytest.mark.parametrize(("method", "path", "body", "rpc"), ROUTES, ids=ROUTE_IDS)
async def test_other_codes_are_not_retried(
    aiohttp_client: Any, method: str, path: str, body: Any, rpc: str
) -> None:
    refused = rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "no such thing")
    first = Core(A, MODEL_ID, loaded=True, error=refused)
    second = Core(B, MODEL_ID)
    bridge = await bridge_over(aiohttp_client, first, second)
    status, text, _ = await send(bridge, method, path, body)
    assert status == 400 and "no such thing" in text
    assert (first.calls[rpc], second.calls[rpc]) == (1, 0)


@pytest.mark.parametrize(("method", "path", "body", "rpc"), ROUTES, ids=ROUTE_IDS)
async def test_unavailable_twice_is_a_503_without_an_address_and_no_third_try(
    aiohttp_client: Any, method: str, path: str, body: Any, rpc: str
) -> None:
    cores = [
        Core(A, MODEL_ID, loaded=True, error=unavailable(A)),
        Core(B, MODEL_ID, error=unavailable(B)),
        Core(C, MODEL_ID, error=unavailable(C)),
    ]
    bridge = await bridge_over(aiohttp_client, *cores)
    status, text, headers = await send(bridge, method, path, body)
    assert status == 503 and headers["Retry-After"] == "1"
    assert "unavailable" in text and "127.0.0.1" not in text and "5005" not in text
    assert [core.calls[rpc] for core in cores].count(1) == 2
    assert sum(core.calls[rpc] for core in cores) == 2


@pytest.mark.parametrize(("method", "path", "body", "rpc"), ROUTES, ids=ROUTE_IDS)
async def test_only_cores_that_list_the_model_are_tried(
    aiohttp_client: Any, method: str, path: str, body: Any, rpc: str
) -> None:
    first = Core(A, MODEL_ID, loaded=True, error=unavailable(A))
    without = Core(B, OTHER, loaded=True)
    third = Core(C, OTHER, MODEL_ID)
    bridge = await bridge_over(aiohttp_client, first, without, third)
    status, text, _ = await send(bridge, method, path, body)
    assert status == 200, text
    assert (first.calls[rpc], without.calls[rpc], third.calls[rpc]) == (1, 0, 1)
    third.client.models.error = third.client.inference.error = unavailable(C)
    status, _, _ = await send(bridge, method, path, body)
    assert status == 503  # the core without the model is never asked, even as a last resort
    assert (first.calls[rpc], without.calls[rpc], third.calls[rpc]) == (2, 0, 2)


async def test_a_load_that_fails_after_its_first_message_is_not_retried(
    aiohttp_client: Any,
) -> None:
    first = Core(A, MODEL_ID, loaded=True, error=unavailable(A), after=1)
    second = Core(B, MODEL_ID)
    bridge = await bridge_over(aiohttp_client, first, second)
    status, text, _ = await send(bridge, "POST", "/api/generate", {"model": MODEL_ID})
    assert status == 503 and "127.0.0.1" not in text
    assert (first.calls["LoadModel"], second.calls["LoadModel"]) == (1, 0)
