"""llama-server's utility endpoints: POST /tokenize, /detokenize and /apply-template, in its shapes.

llama-server serves one model, so its bodies name none: `model` is optional here, and without it
the cores' only model is used (a 400 naming `model` when they serve several).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from aiohttp import web
from minerva.v1 import inference_pb2

from rest_bridge import routing
from rest_bridge.body import parse_body
from rest_bridge.errors import BadRequest, translate_grpc_errors
from rest_bridge.fields import get_bool, get_str
from rest_bridge.protocol import parse_messages, token_ids
from rest_bridge.tools import tool_fields


async def tokenize(request: web.Request) -> web.Response:
    """{"content", "add_special"?: false, "parse_special"?: true, "with_pieces"?: false}
    -> {"tokens": [id, ...]} or, with pieces, {"tokens": [{"id", "piece"}, ...]}."""
    body = parse_body(await request.read())
    content = get_str(body, "content")
    if content is None:
        raise BadRequest("'content' is required", "content")
    with_pieces = bool(get_bool(body, "with_pieces"))
    model = await _model(request, body)
    pb_request = inference_pb2.TokenizeRequest(
        model_id=model,
        text=content,
        add_special=bool(get_bool(body, "add_special")),
        parse_special=_default_true(get_bool(body, "parse_special")),
        with_pieces=with_pieces,
    )
    reply = await routing.unary(
        request,
        model,
        lambda core: core.inference.Tokenize(pb_request, metadata=core.metadata),
        partial(translate_grpc_errors, input_name="content"),
    )
    if not with_pieces:
        return web.json_response({"tokens": list(reply.token_ids)})
    pieces = [
        {"id": token, "piece": _piece(piece)}
        for token, piece in zip(reply.token_ids, reply.pieces, strict=True)
    ]
    return web.json_response({"tokens": pieces})


async def detokenize(request: web.Request) -> web.Response:
    """{"tokens": [id, ...]} -> {"content": text}."""
    body = parse_body(await request.read())
    model = await _model(request, body)
    pb_request = inference_pb2.DetokenizeRequest(model_id=model, token_ids=_tokens(body))
    reply = await routing.unary(
        request,
        model,
        lambda core: core.inference.Detokenize(pb_request, metadata=core.metadata),
        partial(translate_grpc_errors, input_name="tokens"),
    )
    return web.json_response({"content": reply.text})


async def apply_template(request: web.Request) -> web.Response:
    """A chat completions body (messages, tools, tool_choice) -> {"prompt": text}."""
    body = parse_body(await request.read())
    model = await _model(request, body)
    pb_request = inference_pb2.ApplyChatTemplateRequest(
        model_id=model, messages=parse_messages(body), **tool_fields(body)
    )
    reply = await routing.unary(
        request,
        model,
        lambda core: core.inference.ApplyChatTemplate(pb_request, metadata=core.metadata),
        partial(translate_grpc_errors, input_name="messages"),
    )
    return web.json_response({"prompt": reply.prompt})


async def _model(request: web.Request, body: dict[str, Any]) -> str:
    """The model the body names, else the only one the cores serve."""
    return get_str(body, "model") or await _only_model(request)


async def _only_model(request: web.Request) -> str:
    async with translate_grpc_errors(routing.target_label(request)):
        listing = await routing.list_models(request)
    if len(listing.models) != 1:
        raise BadRequest(
            f"'model' is required: the core serves {len(listing.models)} models", "model"
        )
    return str(listing.models[0].id)


def _tokens(body: dict[str, Any]) -> list[int]:
    value = body.get("tokens")
    if value == []:
        return []
    return token_ids(value, "tokens")


def _piece(piece: bytes) -> str | list[int]:
    """A token's text, or its bytes when they are not whole UTF-8 characters (as llama-server)."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return list(piece)


def _default_true(value: bool | None) -> bool:
    return True if value is None else value


def setup(app: web.Application) -> None:
    app.router.add_post("/tokenize", tokenize)
    app.router.add_post("/detokenize", detokenize)
    app.router.add_post("/apply-template", apply_template)
