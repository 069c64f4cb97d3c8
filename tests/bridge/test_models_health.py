"""GET /v1/models, /v1/models/{id} and /health on the fake core."""

from __future__ import annotations

import json

import grpc
from aiohttp.test_utils import TestClient
from grpc_health.v1 import health_pb2

from rest_bridge.errors import CORE_UNAVAILABLE
from tests.bridge.conftest import MODEL_ID, FakeCore, MakeBridge, rpc_error


async def test_list_models(bridge: TestClient) -> None:
    response = await bridge.get("/v1/models")
    assert response.status == 200
    data = await response.json()
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == [MODEL_ID]
    model = data["data"][0]
    assert (model["object"], model["owned_by"]) == ("model", "minerva")
    assert model["minerva"]["vocab_size"] == 49152
    assert len(json.dumps(model)) < 1024


async def test_retrieve_model(bridge: TestClient) -> None:
    response = await bridge.get(f"/v1/models/{MODEL_ID}")
    assert response.status == 200
    data = await response.json()
    assert data["id"] == MODEL_ID
    assert data["minerva"]["layer_count"] == 30


async def test_unknown_model_is_404_envelope(bridge: TestClient) -> None:
    response = await bridge.get("/v1/models/no-such-model")
    assert response.status == 404
    error = (await response.json())["error"]
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    assert "no-such-model" in error["message"]


async def test_models_while_core_down_is_503(bridge: TestClient, core: FakeCore) -> None:
    core.models.error = rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused")
    response = await bridge.get("/v1/models")
    assert response.status == 503
    message = (await response.json())["error"]["message"]
    assert message == CORE_UNAVAILABLE


async def test_health_serving(bridge: TestClient) -> None:
    response = await bridge.get("/health")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "core": "SERVING"}


async def test_health_not_serving_while_core_drains(bridge: TestClient, core: FakeCore) -> None:
    core.health.status = health_pb2.HealthCheckResponse.NOT_SERVING
    response = await bridge.get("/health")
    assert response.status == 503
    assert await response.json() == {"status": "unavailable", "core": "NOT_SERVING"}


async def test_health_core_unreachable(bridge: TestClient, core: FakeCore) -> None:
    core.health.error = rpc_error(grpc.StatusCode.UNAVAILABLE, "refused")
    response = await bridge.get("/health")
    assert response.status == 503
    data = await response.json()
    assert data["core"] == "UNAVAILABLE"
    assert data["message"] == "core unavailable"  # no address: the probe needs no key


async def test_health_needs_no_key(make_bridge: MakeBridge) -> None:
    bridge = await make_bridge(api_keys=("secret",))
    assert (await bridge.get("/health")).status == 200
    assert (await bridge.get("/v1/models")).status == 401
