"""Ollama's model routes: /, /api/version, /api/tags, /api/show, /api/ps, and the operations a
registry-backed server does not do (pull, push, create, copy, delete)."""

from __future__ import annotations

from functools import partial

from aiohttp import web
from aiohttp.typedefs import Handler
from minerva.v1 import models_pb2

from rest_bridge import routing
from rest_bridge.body import parse_body
from rest_bridge.errors import ApiError
from rest_bridge.fields import get_bool
from rest_bridge.ollama import requests as ask
from rest_bridge.ollama import responses as shape
from rest_bridge.ollama.errors import ollama_errors

REGISTRY_ONLY = (
    "Minerva serves the models in its registry (the files in its models directory and its "
    "configuration); it does not {what} models"
)


async def root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")


async def version(request: web.Request) -> web.Response:
    return web.json_response({"version": shape.OLLAMA_VERSION})


async def _listing(request: web.Request) -> list[models_pb2.Model]:
    """Every core's models, each once."""
    async with ollama_errors(routing.target_label(request)):
        reply = await routing.list_models(request)
    return list(reply.models)


async def tags(request: web.Request) -> web.Response:
    models = [m for m in await _listing(request) if m.HasField("metadata")]
    return web.json_response({"models": [shape.tag(m) for m in models]})


async def ps(request: web.Request) -> web.Response:
    loaded = [m for m in await _listing(request) if m.load_state == models_pb2.LOAD_STATE_LOADED]
    return web.json_response({"models": [shape.running(m) for m in loaded]})


async def show(request: web.Request) -> web.Response:
    body = parse_body(await request.read())
    model, name = ask.model_id(body)
    verbose = bool(get_bool(body, "verbose"))
    pb_request = models_pb2.GetModelRequest(
        model_id=model, with_header=True, with_header_arrays=verbose
    )
    reply = await routing.unary(
        request,
        model,
        lambda core: core.models.GetModel(pb_request, metadata=core.metadata),
        partial(ollama_errors, model=name),
    )
    return web.json_response(shape.show(reply))


def _not_done(what: str) -> Handler:
    async def refuse(request: web.Request) -> web.Response:
        raise ApiError(501, REGISTRY_ONLY.format(what=what), code="unsupported")

    return refuse


def setup(app: web.Application) -> None:
    app.router.add_get("/", root)  # also answers HEAD
    app.router.add_get("/api/version", version)
    app.router.add_get("/api/tags", tags)
    app.router.add_get("/api/ps", ps)
    app.router.add_post("/api/show", show)
    app.router.add_post("/api/pull", _not_done("pull"))
    app.router.add_post("/api/push", _not_done("push"))
    app.router.add_post("/api/create", _not_done("create"))
    app.router.add_post("/api/copy", _not_done("copy"))
    app.router.add_delete("/api/delete", _not_done("delete"))
    # Ollama's blob routes: HEAD (does the server have it) and POST (upload).
    app.router.add_route("HEAD", "/api/blobs/{digest}", _not_done("store blobs of"))
    app.router.add_post("/api/blobs/{digest}", _not_done("store blobs of"))
