"""POST /api/chat and /api/generate: Ollama's generation routes over the core's Chat and
Generate RPCs; NDJSON streams by default, one object with `stream: false`."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiohttp import web
from minerva.v1 import inference_pb2, models_pb2
from minerva.v1.ratelimit import TokenMeter

from rest_bridge import ndjson, ratelimit, routing
from rest_bridge.app_keys import METRICS, SETTINGS
from rest_bridge.body import parse_body
from rest_bridge.errors import BadRequest
from rest_bridge.fields import get_bool, get_str
from rest_bridge.ollama import requests as ask
from rest_bridge.ollama import responses as shape
from rest_bridge.ollama.errors import ollama_errors
from rest_bridge.protocol import session_id
from rest_bridge.tools import parse_tools

log = logging.getLogger(__name__)


@dataclass
class Reply:
    """One answer's objects: text pieces, tool calls once each is complete, then the end."""

    name: str
    chat: bool  # /api/chat (a message) or /api/generate (a response)
    calls: dict[int, dict[str, str]] = field(default_factory=dict)  # call index -> name, args
    sent_calls: int = 0

    def piece(self, text: str, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.name, "created_at": shape.rfc3339()}
        if self.chat:
            body["message"] = {"role": "assistant", "content": text, **extra}
        else:
            body["response"] = text
        return {**body, "done": False}

    def on_chunk(self, chunk: inference_pb2.GenerationChunk) -> list[dict[str, Any]]:
        out = []
        if chunk.text or chunk.logprobs:
            piece = self.piece(chunk.text)
            if chunk.logprobs:
                piece["logprobs"] = shape.logprobs(chunk.logprobs)
            out.append(piece)
        for delta in chunk.tool_calls:
            if delta.id:
                out.extend(self._complete_calls())  # the calls before this one are whole
                self.calls[delta.call_index] = {"name": delta.name, "arguments": ""}
            self.calls[delta.call_index]["arguments"] += delta.arguments
        return out

    def on_final(self, final: inference_pb2.GenerationFinal) -> list[dict[str, Any]]:
        last = self.piece("")
        last.update(done=True, **shape.timings(final))
        return [*self._complete_calls(), last]

    def _complete_calls(self) -> list[dict[str, Any]]:
        """Calls not yet sent, as Ollama sends them: whole, arguments as an object."""
        calls = [self.calls[i] for i in sorted(self.calls) if i >= self.sent_calls]
        self.sent_calls = len(self.calls)
        made = [c for c in (_ollama_call(c) for c in calls) if c is not None]
        return [self.piece("", tool_calls=made)] if made else []


def _ollama_call(call: dict[str, str]) -> dict[str, Any] | None:
    try:
        arguments = json.loads(call["arguments"] or "{}")
    except json.JSONDecodeError:
        log.info("ollama: dropping a tool call cut short: %s", call["name"])
        return None  # cut by num_predict: done_reason says "length"
    return {"function": {"name": call["name"], "arguments": arguments}}


def joined(objects: list[dict[str, Any]], chat: bool) -> dict[str, Any]:
    """A whole answer (`stream: false`): the pieces' text and calls in the last object."""
    last = dict(objects[-1])
    if chat:
        calls = [c for o in objects for c in o["message"].get("tool_calls", [])]
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(o["message"]["content"] for o in objects),
        }
        if calls:
            message["tool_calls"] = calls
        last["message"] = message
    else:
        last["response"] = "".join(o["response"] for o in objects)
    picked = [item for o in objects for item in o.get("logprobs", [])]
    if picked:
        last["logprobs"] = picked
    return last


async def chat(request: web.Request) -> web.StreamResponse:
    body = parse_body(await request.read())
    model, name = ask.model_id(body)
    ask.refuse_thinking(body, name)
    messages = ask.messages(body)
    if not messages:
        return await _load_or_unload(request, model, name, body, chat=True)
    sampling, num_ctx = ask.sampling(body)
    pb_request = inference_pb2.ChatRequest(
        model_id=model, messages=messages, sampling=sampling, tools=parse_tools(body)
    )
    _set_common(request, pb_request, body, num_ctx)
    return await _respond(request, _chat(pb_request), Reply(name, chat=True), body, pb_request)


async def generate(request: web.Request) -> web.StreamResponse:
    body = parse_body(await request.read())
    model, name = ask.model_id(body)
    ask.refuse_thinking(body, name)
    _refuse_generate_fields(body, name)
    prompt = get_str(body, "prompt") or ""
    if not prompt:
        return await _load_or_unload(request, model, name, body, chat=False)
    sampling, num_ctx = ask.sampling(body)
    reply = Reply(name, chat=False)
    if get_bool(body, "raw"):  # the prompt as written: no template, no system
        raw = inference_pb2.GenerateRequest(model_id=model, text=prompt, sampling=sampling)
        _set_common(request, raw, body, num_ctx)
        return await _respond(request, _generate(raw), reply, body, raw)
    system = get_str(body, "system")
    turns = [inference_pb2.ChatMessage(role="system", content=system)] if system else []
    turns.append(inference_pb2.ChatMessage(role="user", content=prompt))
    templated = inference_pb2.ChatRequest(model_id=model, messages=turns, sampling=sampling)
    _set_common(request, templated, body, num_ctx)
    return await _respond(request, _chat(templated), reply, body, templated)


def _chat(pb_request: inference_pb2.ChatRequest) -> routing.Start:
    return lambda core: core.inference.Chat(pb_request, metadata=core.metadata)


def _generate(pb_request: inference_pb2.GenerateRequest) -> routing.Start:
    return lambda core: core.inference.Generate(pb_request, metadata=core.metadata)


def _refuse_generate_fields(body: dict[str, Any], name: str) -> None:
    """Fields that would change the answer and that no model here can honour."""
    if get_str(body, "suffix"):
        raise BadRequest(f'"{name}" does not support insert', "suffix")
    if get_str(body, "template"):
        raise BadRequest(
            "template overrides are not supported: the server applies the model's chat "
            "template (or its configured chat_template)",
            "template",
        )
    if body.get("context"):
        raise BadRequest("context (the deprecated token memory) is not supported", "context")
    ask.refuse_images("the request", body)


def _set_common(
    request: web.Request, pb_request: Any, body: dict[str, Any], num_ctx: int | None
) -> None:
    pb_request.keep_alive_seconds = ask.keep_alive(body, request.app[SETTINGS].ollama_keep_alive_s)
    if num_ctx is not None:
        pb_request.context_size = num_ctx
    threads = ask.num_thread(body)
    if threads is not None:
        pb_request.threads = threads


async def _respond(
    request: web.Request,
    start: routing.Start,
    reply: Reply,
    body: dict[str, Any],
    pb_request: inference_pb2.ChatRequest | inference_pb2.GenerateRequest,
) -> web.StreamResponse:
    """NDJSON unless `stream: false`, on the core the router picks for the model and the
    conversation (the x-session-affinity header, else its opening), once that core has room
    (admission); the call is cancelled however the handler ends."""
    model = pb_request.model_id
    key = routing.conversation(pb_request, session_id(request.headers))
    counters = request.app[METRICS]
    gaps = counters.token_gaps(model)

    async def objects() -> AsyncGenerator[dict[str, Any], None]:
        async with ollama_errors(routing.target_label(request), reply.name):
            async for event in call:
                gaps.saw(event)
                meter.see(event)
                if event.WhichOneof("event") == "chunk":
                    for item in reply.on_chunk(event.chunk):
                        yield item
                else:
                    counters.observe_generation(model, event.final)
                    for item in reply.on_final(event.final):
                        yield item

    meter = TokenMeter()
    with routing.generation(request, model, key, start) as call:
        try:
            if body.get("stream", True) is not False:
                return await ndjson.stream_lines(request, objects())
            return web.json_response(joined([o async for o in objects()], reply.chat))
        finally:
            call.cancel()
            ratelimit.charge(request, meter.tokens)  # cut short too: what was generated


async def _load_or_unload(
    request: web.Request, model: str, name: str, body: dict[str, Any], *, chat: bool
) -> web.Response:
    """An empty prompt loads the model on the core the router picks (keep_alive 0: unloads it
    from every core that serves it), as Ollama does."""
    keep = ask.keep_alive(body, request.app[SETTINGS].ollama_keep_alive_s)
    reason = "unload" if keep == 0 else "load"
    if keep == 0:
        async with ollama_errors(routing.target_label(request), name):
            for client in routing.serving(request, model):
                await client.models.UnloadModel(
                    models_pb2.UnloadModelRequest(model_id=model), metadata=client.metadata
                )
    else:
        await load(request, model, name, keep, ask.num_ctx(body), ask.num_thread(body))
    reply = Reply(name, chat).piece("")
    reply.update(done=True, done_reason=reason)
    return web.json_response(reply)


async def load(
    request: web.Request,
    model: str,
    name: str,
    keep: float,
    num_ctx: int | None,
    threads: int | None = None,
) -> None:
    """LoadModel, as Ollama loads on an empty prompt or input (with `options.num_ctx` and
    `options.num_thread`), on the core the router picks, or on another that lists the model
    when that one fails UNAVAILABLE before the stream's first message; `name` is the model as
    the client wrote it (a 404 says it)."""
    pb_request = models_pb2.LoadModelRequest(model_id=model, keep_alive_seconds=keep)
    if num_ctx is not None:
        pb_request.context_size = num_ctx
    if threads is not None:
        pb_request.threads = threads
    await routing.server_stream(
        request,
        model,
        lambda core: core.models.LoadModel(pb_request, metadata=core.metadata),
        partial(ollama_errors, model=name),
    )


def setup(app: web.Application) -> None:
    app.router.add_post("/api/chat", chat)
    app.router.add_post("/api/generate", generate)
