"""GET /v1/models and /v1/models/{id}: the core's registry as OpenAI model objects."""

from __future__ import annotations

from aiohttp import web
from minerva.v1 import models_pb2

from rest_bridge import routing, translate
from rest_bridge.errors import BadRequest, translate_grpc_errors

LIST_FORMATS = ("json", "compact")


async def list_models(request: web.Request) -> web.Response:
    """OpenAI's model list, every core's models once; `?format=compact` is the cores'
    one-line-per-model text for tools (MODEL|QUANT|SIZE_MB|TENSORS|LAYERS|VOCAB)."""
    shape = request.query.get("format", "json")
    if shape not in LIST_FORMATS:
        raise BadRequest("'format' must be 'json' or 'compact'", "format")
    async with translate_grpc_errors(routing.target_label(request)):
        response = await routing.list_models(request, compact=shape == "compact")
    if shape == "compact":
        return web.Response(text=response.compact, content_type="text/plain")
    return web.json_response(translate.model_list(response.models))


async def retrieve_model(request: web.Request) -> web.Response:
    model_id = request.match_info["model_id"]
    pb_request = models_pb2.GetModelRequest(model_id=model_id)
    response = await routing.unary(
        request,
        model_id,
        lambda core: core.models.GetModel(pb_request, metadata=core.metadata),
        translate_grpc_errors,
    )
    return web.json_response(translate.model_object(response.model))


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model_id}", retrieve_model)
