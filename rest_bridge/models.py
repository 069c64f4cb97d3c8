"""GET /v1/models and /v1/models/{id}: the core's registry as OpenAI model objects."""

from __future__ import annotations

from aiohttp import web
from minerva.v1 import models_pb2

from rest_bridge import translate
from rest_bridge.app_keys import CLIENT
from rest_bridge.errors import BadRequest, translate_grpc_errors

LIST_FORMATS = ("json", "compact")


async def list_models(request: web.Request) -> web.Response:
    """OpenAI's model list; `?format=compact` is the core's one-line-per-model text for tools
    (MODEL|QUANT|SIZE_MB|TENSORS|LAYERS|VOCAB)."""
    shape = request.query.get("format", "json")
    if shape not in LIST_FORMATS:
        raise BadRequest("'format' must be 'json' or 'compact'", "format")
    client = request.app[CLIENT]
    async with translate_grpc_errors(client.address):
        response = await client.models.ListModels(
            models_pb2.ListModelsRequest(compact=shape == "compact"), metadata=client.metadata
        )
    if shape == "compact":
        return web.Response(text=response.compact, content_type="text/plain")
    return web.json_response(translate.model_list(response.models))


async def retrieve_model(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    model_id = request.match_info["model_id"]
    async with translate_grpc_errors(client.address):
        response = await client.models.GetModel(
            models_pb2.GetModelRequest(model_id=model_id), metadata=client.metadata
        )
    return web.json_response(translate.model_object(response.model))


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model_id}", retrieve_model)
