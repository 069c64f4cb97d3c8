"""POST /v1/embeddings: thin handler over the core's Embed RPC."""

from __future__ import annotations

from functools import partial

from aiohttp import web

from rest_bridge import ratelimit, routing, translate
from rest_bridge.app_keys import METRICS
from rest_bridge.body import parse_body
from rest_bridge.errors import translate_grpc_errors
from rest_bridge.protocol import embed_request


async def create_embeddings(request: web.Request) -> web.Response:
    pb_request, encoding = embed_request(parse_body(await request.read()))
    response = await routing.unary(
        request,
        pb_request.model_id,
        lambda core: core.inference.Embed(pb_request, metadata=core.metadata),
        partial(translate_grpc_errors, input_name="input"),
    )
    request.app[METRICS].observe_embedding(pb_request.model_id, response.usage.prompt_tokens)
    ratelimit.charge(request, response.usage.prompt_tokens)
    return web.json_response(translate.embedding_list(response, pb_request.model_id, encoding))


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/embeddings", create_embeddings)
