"""POST /api/embed (unit vectors, inputs too long are cut unless `truncate: false`) and the
legacy POST /api/embeddings (one prompt, its raw vector) over the core's Embed RPC."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from aiohttp import web
from minerva.v1 import inference_pb2

from rest_bridge import ratelimit, routing
from rest_bridge.app_keys import METRICS, SETTINGS
from rest_bridge.body import parse_body
from rest_bridge.errors import BadRequest
from rest_bridge.fields import get_bool, get_str
from rest_bridge.ollama import requests as ask
from rest_bridge.ollama.chat import load
from rest_bridge.ollama.errors import ollama_errors


def _inputs(body: dict[str, Any]) -> list[str]:
    """The texts to embed; none (absent or "") only loads the model, as Ollama does. An empty
    string inside a list is refused: dropping it would shift every later vector's index."""
    value = body.get("input")
    if value is None or value == "":
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise BadRequest("input must be a string or a list of strings", "input")
    for index, item in enumerate(items):
        if not item:
            raise BadRequest(f"input[{index}] is empty: every input needs text", "input")
    return items


async def _embed(
    request: web.Request, body: dict[str, Any], texts: list[str], *, normalize: bool
) -> tuple[str, list[list[float]], int, float]:
    """(the name as sent, vectors, input tokens, seconds) for the texts; none loads the model."""
    model, name = ask.model_id(body)
    if body.get("dimensions") is not None:
        raise BadRequest("dimensions is not supported: vectors have the model's size", "dimensions")
    keep = ask.keep_alive(body, request.app[SETTINGS].ollama_keep_alive_s)
    num_ctx, threads = ask.num_ctx(body), ask.num_thread(body)
    started = time.perf_counter()
    if not texts:
        await load(request, model, name, keep, num_ctx, threads)
        return name, [], 0, time.perf_counter() - started
    pb_request = inference_pb2.EmbedRequest(
        model_id=model,
        inputs=[inference_pb2.EmbedInput(text=t) for t in texts],
        normalize=normalize,
        truncate=get_bool(body, "truncate") is not False,
    )
    pb_request.keep_alive_seconds = keep
    if num_ctx is not None:
        pb_request.context_size = num_ctx
    if threads is not None:
        pb_request.threads = threads
    reply = await routing.unary(
        request,
        model,
        lambda core: core.inference.Embed(pb_request, metadata=core.metadata),
        partial(ollama_errors, model=name),
    )
    tokens = reply.usage.prompt_tokens
    request.app[METRICS].observe_embedding(model, tokens)
    ratelimit.charge(request, tokens)
    vectors = [list(v.values) for v in reply.embeddings]
    return name, vectors, tokens, time.perf_counter() - started


async def embed(request: web.Request) -> web.Response:
    body = parse_body(await request.read())
    name, vectors, tokens, seconds = await _embed(request, body, _inputs(body), normalize=True)
    return web.json_response(
        {
            "model": name,
            "embeddings": vectors,
            "total_duration": int(seconds * 1e9),
            "load_duration": 0,
            "prompt_eval_count": tokens,
        }
    )


async def embeddings(request: web.Request) -> web.Response:
    body = parse_body(await request.read())
    prompt = get_str(body, "prompt") or ""
    _, vectors, _, _ = await _embed(request, body, [prompt] if prompt else [], normalize=False)
    return web.json_response({"embedding": vectors[0] if vectors else []})


def setup(app: web.Application) -> None:
    app.router.add_post("/api/embed", embed)
    app.router.add_post("/api/embeddings", embeddings)
