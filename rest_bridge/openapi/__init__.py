"""GET /openapi.json: the OpenAPI 3.1 document of every route the bridge serves; public, like
/health, as it follows the code, not the deployment: it names no address, key or model."""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from aiohttp import web

from rest_bridge import auth, ratelimit
from rest_bridge.errors import is_ollama_path
from rest_bridge.openapi import ollama_paths, ollama_schemas, openai_objects, openai_paths
from rest_bridge.openapi import openai_requests as req
from rest_bridge.openapi.schema import OLLAMA_ERROR, OPENAI_ERROR, error_responses, errors

PATH = "/openapi.json"
SECURITY_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "An API key. Required on every route but /health and /openapi.json when the "
    "bridge has keys (always off loopback, unless started with --allow-unauthenticated).",
}


def _version() -> str:
    try:
        return version("minerva")
    except PackageNotFoundError:
        return "unknown"


def gated(paths: dict[str, Any]) -> dict[str, Any]:
    """Each operation with the gates in front of its route: the API key (401) and the rate
    limit (429), except where the auth and rate-limit middlewares exempt the path."""
    for path, item in paths.items():
        for method, op in item.items():
            if method == "parameters":
                continue
            statuses = set()
            if path in auth.EXEMPT_PATHS:
                op["security"] = []
            else:
                statuses.add(401)
            if path not in ratelimit.EXEMPT_PATHS:
                statuses.add(429)
            added = errors(tuple(statuses), ollama=is_ollama_path(path))
            op["responses"] = dict(sorted({**added, **op["responses"]}.items()))
    return paths


def _statuses(paths: dict[str, Any]) -> set[int]:
    """Every error status some operation answers."""
    return {
        int(status)
        for item in paths.values()
        for method, op in item.items()
        if method != "parameters"
        for status in op["responses"]
        if int(status) >= 400
    }


def document() -> dict[str, Any]:
    """The whole document; built from the bridge's own tables, so it follows them."""
    schemas = {
        "OpenAIError": OPENAI_ERROR,
        "OllamaError": OLLAMA_ERROR,
        "ChatMessage": req.CHAT_MESSAGE,
        "Tool": req.TOOL,
        "ChatCompletionRequest": req.CHAT_REQUEST,
        "CompletionRequest": req.COMPLETION_REQUEST,
        "EmbeddingRequest": req.EMBEDDING_REQUEST,
        **openai_objects.SCHEMAS,
        **ollama_schemas.SCHEMAS,
    }
    paths = gated({**openai_paths.paths(), **ollama_paths.paths()})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Minerva REST bridge",
            "version": _version(),
            "description": "OpenAI- and Ollama-compatible HTTP API over Minerva's gRPC core.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": error_responses(_statuses(paths)),
            "securitySchemes": {"bearerAuth": SECURITY_SCHEME},
        },
        "security": [{"bearerAuth": []}],
    }


def setup(app: web.Application) -> None:
    body = json.dumps(document()).encode()

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app.router.add_get(PATH, openapi_json)
