"""Ollama's routes as OpenAPI path items: errors are {"error": "..."}, streams NDJSON."""

from __future__ import annotations

from typing import Any

from rest_bridge.openapi import ollama_schemas as ol
from rest_bridge.openapi.schema import (
    ALWAYS,
    OLLAMA_CORE,
    WITH_BODY,
    Schema,
    errors,
    json_response,
    operation,
    ref,
    response,
    string,
)

OLLAMA = ("Ollama",)
NDJSON = "application/x-ndjson"
# What the registry-backed bridge does not do: 501 after the usual checks.
NOT_DONE = {
    "/api/pull": "post",
    "/api/push": "post",
    "/api/create": "post",
    "/api/copy": "post",
    "/api/delete": "delete",
}


def _generation(summary: str, body: Schema, piece: str) -> dict[str, Any]:
    line = {"anyOf": [ref(piece), ref("OllamaError")]}
    ok = response(
        "NDJSON objects (each line one; a failure after the first is an error line), one "
        "object with `stream: false`, or, without messages or prompt, the load's answer",
        {NDJSON: line, "application/json": ref(piece)},
    )
    return {
        "post": operation(
            summary,
            {"200": ok, **_errors(WITH_BODY, OLLAMA_CORE)},
            body=body,
            tags=OLLAMA,
        )
    }


def _errors(*groups: tuple[int, ...]) -> dict[str, Any]:
    return errors(ALWAYS, *groups, ollama=True)


def _get(summary: str, answer: Schema, *groups: tuple[int, ...]) -> dict[str, Any]:
    ok = json_response(summary, answer)
    return {"get": operation(summary, {"200": ok, **_errors(*groups)}, tags=OLLAMA)}


def _post(summary: str, body: Schema, answer: Schema) -> dict[str, Any]:
    ok = json_response(summary, answer)
    responses = {"200": ok, **_errors(WITH_BODY, OLLAMA_CORE)}
    return {"post": operation(summary, responses, body=body, tags=OLLAMA)}


def _not_done(method: str) -> dict[str, Any]:
    refusal = operation(
        "Not done: Minerva serves the models in its registry",
        _errors((501,)),
        tags=OLLAMA,
    )
    return {method: refusal}


def paths() -> dict[str, Any]:
    running = response("Ollama is running", {"text/plain": string()})
    found: dict[str, Any] = {
        "/": {"get": operation("Ollama's heartbeat", {"200": running, **_errors()}, tags=OLLAMA)},
        "/api/version": _get("The Ollama API version spoken", ol.VERSION),
        "/api/tags": _get("The models", ol.TAGS, OLLAMA_CORE),
        "/api/ps": _get("The loaded models", ol.PS, OLLAMA_CORE),
        "/api/show": _post("One model's details", ol.SHOW_REQUEST, ol.SHOW),
        "/api/chat": _generation("Chat", ol.CHAT_REQUEST, "OllamaChatPiece"),
        "/api/generate": _generation("Generate", ol.GENERATE_REQUEST, "OllamaGeneratePiece"),
        "/api/embed": _post("Embeddings (unit vectors)", ol.EMBED_REQUEST, ol.EMBED),
        "/api/embeddings": _post(
            "The legacy embedding (one prompt, its raw vector)",
            ol.EMBEDDINGS_REQUEST,
            ol.EMBEDDINGS,
        ),
        **{path: _not_done(method) for path, method in NOT_DONE.items()},
    }
    blobs = {**_not_done("head"), **_not_done("post")}
    blobs["parameters"] = [{"name": "digest", "in": "path", "required": True, "schema": string()}]
    found["/api/blobs/{digest}"] = blobs
    return found
