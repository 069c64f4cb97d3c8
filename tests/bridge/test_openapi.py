"""GET /openapi.json: it documents exactly the routes the bridge serves, is public and names no
address or key, and is a valid OpenAPI document that follows the contract's limits."""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from aiohttp import web
from minerva.v1.limits import MAX_CHOICES, MAX_STOPS, MAX_TOP_LOGPROBS

from rest_bridge.app import create_app
from rest_bridge.openapi import document
from rest_bridge.settings import Settings
from tests.bridge.conftest import CORE_ADDRESS, FakeCore, MakeBridge

OPENAPI_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
KEY = "sk-openapi-test-key-41"


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of every route, less the HEAD aiohttp adds beside each GET."""
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }
    return {(m, p) for m, p in routes if not (m == "head" and ("get", p) in routes)}


def documented_routes(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in doc["paths"].items()
        for method in item
        if method in OPENAPI_METHODS
    }


def test_document_covers_exactly_the_served_routes() -> None:
    app = create_app(Settings(core_address=CORE_ADDRESS), FakeCore().client())
    served = served_routes(app)
    assert ("post", "/v1/chat/completions") in served and ("get", "/openapi.json") in served
    assert documented_routes(document()) == served


def test_document_is_valid_openapi_3_1() -> None:
    schema = schemathesis.openapi.from_dict(document())
    schema.validate()  # raises on any violation of the OpenAPI 3.1 meta-schema
    assert document()["openapi"] == "3.1.0"


async def test_openapi_json_is_public_and_names_no_address_or_key(make_bridge: MakeBridge) -> None:
    bridge = await make_bridge(api_keys=(KEY,))
    refused = await bridge.get("/v1/models")
    assert refused.status == 401
    response = await bridge.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    text = await response.text()
    assert json.loads(text) == document()
    assert CORE_ADDRESS.split(":")[1] not in text and KEY not in text
    assert "servers" not in json.loads(text)  # clients use the address they reached it at


def test_operations_name_their_gates() -> None:
    """401 and the security requirement where keys are checked; neither on the public routes;
    429 except where the rate limit never counts (probes and scrapes)."""
    paths = document()["paths"]
    chat = paths["/v1/chat/completions"]["post"]
    assert {"401", "413", "429", "503"} <= set(chat["responses"])
    assert "security" not in chat  # the document's default: the bearer key
    health = paths["/health"]["get"]
    assert health["security"] == [] and not {"401", "429"} & set(health["responses"])
    assert paths["/openapi.json"]["get"]["security"] == []
    assert "429" not in paths["/metrics"]["get"]["responses"]
    ollama_404 = paths["/api/chat"]["post"]["responses"]["404"]["$ref"]
    assert ollama_404 == "#/components/responses/OllamaError404"


def test_request_limits_are_the_contracts() -> None:
    chat = document()["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert chat["top_logprobs"]["anyOf"][0]["maximum"] == MAX_TOP_LOGPROBS
    assert chat["n"]["anyOf"][0]["maximum"] == MAX_CHOICES
    assert chat["stop"]["anyOf"][1]["maxItems"] == MAX_STOPS
