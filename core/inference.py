"""Inference use cases: validate, pick the model, apply the chat template, tokenize, then stream."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from minerva.v1.limits import MAX_EMBED_INPUTS, MAX_SESSION_CHARS

from core.chat.plan import ChatPlan, plan_chat
from core.chat.templates import validate_messages
from core.chat.tools.stream import ChatEvent, with_tool_calls
from core.chat.tools.syntax import ToolSyntax, markers
from core.chat.tools.validate import checked_functions
from core.chat.types import ChatMessage, ToolRequest
from core.engine.base import Engine
from core.engine.sampling import Sampling, check_token_ids, resolve_max_tokens
from core.engine.types import GenerationEvent, GenerationRequest
from core.errors import InvalidRequest
from core.keep_alive import UNCHANGED, Default, KeepAlive
from core.manager import ModelManager
from core.registry import Registry

Prompt = str | Sequence[int]
NO_TOOLS = ToolRequest()


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """What a generation request says besides its prompt and sampling."""

    # The client's conversation name: its slot is preferred.
    session: str = ""
    # How long the model stays loaded once idle (core.keep_alive).
    keep_alive: KeepAlive | Default = UNCHANGED
    # At most this many tokens (prompt + generated); None: the model's context.
    context_limit: int | None = None
    # Serve with the model loaded with this context size (Ollama's num_ctx); None: as loaded.
    context_size: int | None = None
    # Compute with this many CPU threads from now on (Ollama's num_thread); None: as now.
    threads: int | None = None


DEFAULT_OPTIONS = RequestOptions()


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Server-wide limits per request; None: none."""

    max_tokens: int | None = None
    generation_s: float | None = None


class Inference:
    """What the InferenceService does, free of protobuf and gRPC."""

    def __init__(
        self,
        registry: Registry,
        manager: ModelManager,
        limits: RequestLimits = RequestLimits(),
    ) -> None:
        self._registry = registry
        self._manager = manager
        self._limits = limits

    async def generate(
        self,
        model_id: str,
        prompt: Prompt,
        *,
        add_special: bool,
        sampling: Sampling,
        options: RequestOptions = DEFAULT_OPTIONS,
    ) -> AsyncGenerator[GenerationEvent, None]:
        arrived = time.perf_counter()
        self._registry.get(model_id)
        _check_session(options.session)
        if not prompt:
            raise InvalidRequest("prompt must not be empty", param="prompt")
        async with (
            self._manager.lease(model_id, options.keep_alive, options.context_size) as engine,
            _reserved(engine),
        ):
            _apply_threads(engine, options.threads)
            if isinstance(prompt, str):
                tokens = await engine.tokenizer.tokenize(prompt, add_special, parse_special=False)
            else:
                tokens = list(prompt)
                check_token_ids(tokens, engine.tokenizer.vocab_size, "prompt")
            request = self._request(engine, tokens, sampling, arrived, "prompt", options)
            async with contextlib.aclosing(engine.generate(request)) as events:
                async for event in events:
                    yield event

    async def chat(
        self,
        model_id: str,
        messages: Sequence[ChatMessage],
        sampling: Sampling,
        options: RequestOptions = DEFAULT_OPTIONS,
        tools: ToolRequest = NO_TOOLS,
    ) -> AsyncGenerator[ChatEvent, None]:
        arrived = time.perf_counter()
        self._registry.get(model_id)
        validate_messages(messages)
        functions = _checked_tools(tools, sampling)
        _check_session(options.session)
        async with (
            self._manager.lease(model_id, options.keep_alive, options.context_size) as engine,
            _reserved(engine),
        ):
            _apply_threads(engine, options.threads)
            plan = await self._plan(model_id, engine, messages, tools, functions, sampling)
            if plan.grammar:
                sampling = replace(
                    sampling,
                    grammar=plan.grammar,
                    json_schema="",
                    grammar_param="tools",
                    grammar_trigger=plan.grammar_trigger,
                )
            tokens = await _prompt_tokens(engine, plan.prompt)
            request = self._request(engine, tokens, sampling, arrived, "messages", options)
            if plan.syntax is not None:
                request = replace(request, preserved=await _marker_tokens(engine, plan.syntax))
            generated = engine.generate(request)
            events: AsyncGenerator[ChatEvent, None] = (
                generated
                if plan.syntax is None
                else with_tool_calls(
                    generated, plan.syntax, frozenset(f["name"] for f in functions)
                )
            )
            async with contextlib.aclosing(events) as stream:
                async for event in stream:
                    yield event

    async def apply_chat_template(
        self,
        model_id: str,
        messages: Sequence[ChatMessage],
        tools: ToolRequest = NO_TOOLS,
        add_generation_prompt: bool = True,
    ) -> tuple[str, int]:
        """The prompt Chat would give the model, and its length in tokens."""
        self._registry.get(model_id)
        validate_messages(messages)
        functions = checked_functions(tools)
        async with self._manager.lease(model_id) as engine:
            plan = await self._plan(
                model_id, engine, messages, tools, functions, Sampling(), add_generation_prompt
            )
            return plan.prompt, len(await _prompt_tokens(engine, plan.prompt))

    async def _plan(
        self,
        model_id: str,
        engine: Engine,
        messages: Sequence[ChatMessage],
        tools: ToolRequest,
        functions: list[dict[str, Any]],
        sampling: Sampling,
        add_generation_prompt: bool = True,
    ) -> ChatPlan:
        spec = self._registry.get(model_id)
        header = await asyncio.to_thread(self._registry.header, spec)
        vocab = engine.tokenizer
        # Templates are programs from the model file: rendered off the event loop, limited.
        return await asyncio.to_thread(
            functools.partial(
                plan_chat,
                messages,
                tools,
                functions,
                model_template=header.chat_template,
                architecture=header.metadata.architecture,
                override=spec.chat_template,
                bos_token=vocab.bos_text,
                eos_token=vocab.eos_text,
                json_schema=sampling.json_schema,
                add_generation_prompt=add_generation_prompt,
            )
        )

    def _request(
        self,
        engine: Engine,
        tokens: list[int],
        sampling: Sampling,
        arrived: float,
        prompt_param: str,
        options: RequestOptions,
    ) -> GenerationRequest:
        if not tokens:  # e.g. a template that renders nothing for a vocabulary without BOS
            raise InvalidRequest(f"the {prompt_param} produced no tokens", param=prompt_param)
        check_token_ids(sampling.logit_bias, engine.tokenizer.vocab_size, "sampling.logit_bias")
        if sampling.n > engine.slots:
            raise InvalidRequest(
                f"sampling.n is {sampling.n} but this model generates at most {engine.slots} "
                "sequences at once (its slots)",
                param="sampling.n",
            )
        cap = self._limits.max_tokens
        if cap is not None and sampling.max_tokens is not None and sampling.max_tokens > cap:
            raise InvalidRequest(
                f"sampling.max_tokens is {sampling.max_tokens}; this server allows at most {cap}",
                param="sampling.max_tokens",
            )
        max_tokens = resolve_max_tokens(
            len(tokens), sampling.max_tokens, _capacity(engine, options), prompt_param=prompt_param
        )
        if cap is not None:
            max_tokens = min(max_tokens, cap)
        # n choices share the prompt's cells but each needs its own: all must fit the KV cache.
        room = (engine.kv_capacity - len(tokens)) // sampling.n
        if room < 1:
            raise InvalidRequest(
                f"{sampling.n} choices of this {len(tokens)}-token prompt do not fit the KV "
                f"cache ({engine.kv_capacity} tokens); ask for fewer",
                param="sampling.n",
            )
        max_tokens = min(max_tokens, room)
        return GenerationRequest(
            tuple(tokens),
            sampling,
            max_tokens,
            arrived,
            sampling.n,
            options.session,
            time_limit_s=self._limits.generation_s,
        )

    def fingerprint(self, model_id: str) -> str:
        """Identifies the file the loaded model came from."""
        return self._manager.fingerprint(model_id)

    async def embed(
        self,
        model_id: str,
        inputs: Sequence[Prompt],
        *,
        normalize: bool,
        keep_alive: KeepAlive | Default = UNCHANGED,
        truncate: bool = False,
        context_size: int | None = None,
        threads: int | None = None,
    ) -> tuple[list[list[float]], int]:
        """One vector per input, and the number of input tokens; with `truncate`, inputs too
        long for the model are cut to what it embeds at once (`context_size`, `threads`: as
        generate's)."""
        self._registry.get(model_id)
        if not inputs:
            raise InvalidRequest("inputs must not be empty", param="inputs")
        if len(inputs) > MAX_EMBED_INPUTS:
            raise InvalidRequest(
                f"{len(inputs)} inputs; at most {MAX_EMBED_INPUTS} per request", param="inputs"
            )
        async with self._manager.lease(model_id, keep_alive, context_size) as engine:
            _apply_threads(engine, threads)
            token_lists = []
            for item in inputs:
                if isinstance(item, str):
                    token_lists.append(
                        await engine.tokenizer.tokenize(item, True, parse_special=False)
                    )
                else:
                    check_token_ids(item, engine.tokenizer.vocab_size, "inputs")
                    token_lists.append(list(item))
            if truncate:
                token_lists = [t[: engine.embed_capacity] for t in token_lists]
            vectors = await engine.embed(token_lists, normalize)
        return vectors, sum(len(t) for t in token_lists)

    async def tokenize(
        self,
        model_id: str,
        text: str,
        *,
        add_special: bool,
        parse_special: bool,
        with_pieces: bool = False,
    ) -> tuple[list[int], list[bytes]]:
        """Token ids, and with_pieces each token's bytes (else no pieces)."""
        self._registry.get(model_id)
        async with self._manager.lease(model_id) as engine:
            ids = await engine.tokenizer.tokenize(text, add_special, parse_special)
            pieces = await engine.tokenizer.pieces(ids) if with_pieces else []
            return ids, pieces

    async def detokenize(self, model_id: str, token_ids: Sequence[int]) -> str:
        self._registry.get(model_id)
        async with self._manager.lease(model_id) as engine:
            check_token_ids(token_ids, engine.tokenizer.vocab_size, "token_ids")
            return await engine.tokenizer.detokenize(token_ids)


async def _marker_tokens(engine: Engine, syntax: ToolSyntax) -> frozenset[int]:
    """The syntax's markers that this vocabulary holds as single (control) tokens."""
    found = set()
    for marker in markers(syntax):
        try:
            ids = await engine.tokenizer.tokenize(marker, False, parse_special=True)
        except InvalidRequest:  # a vocabulary that cannot encode it has no such token
            continue
        if len(ids) == 1:
            found.add(ids[0])
    return frozenset(found)


@contextlib.asynccontextmanager
async def _reserved(engine: Engine) -> AsyncIterator[None]:
    """A place on the model before the prompt is prepared (Engine.reserve)."""
    with engine.reserve():
        yield


def _capacity(engine: Engine, options: RequestOptions) -> int:
    """Tokens this request may use: the model's context, or less when the request says so."""
    limit = options.context_limit
    if limit is None:
        return engine.sequence_capacity
    if not 1 <= limit <= engine.sequence_capacity:
        raise InvalidRequest(
            f"context_limit is {limit}; this model serves 1..{engine.sequence_capacity} tokens "
            "per request as loaded (ask for a larger context_size to load it with more)",
            param="context_limit",
        )
    return limit


async def _prompt_tokens(engine: Engine, prompt: str) -> list[int]:
    vocab = engine.tokenizer
    # Templates that write the BOS token themselves must not get a second one.
    add_bos = vocab.add_bos and not (vocab.bos_text and prompt.startswith(vocab.bos_text))
    return await vocab.tokenize(prompt, add_bos, parse_special=True)


def _checked_tools(tools: ToolRequest, sampling: Sampling) -> list[dict[str, Any]]:
    functions = checked_functions(tools)
    if tools.active and sampling.grammar:
        raise InvalidRequest(
            "sampling.grammar cannot be combined with tools: calls are constrained by their "
            "own grammar (use sampling.json_schema to constrain a text answer)",
            param="sampling.grammar",
        )
    return functions


def _apply_threads(engine: Engine, threads: int | None) -> None:
    """From this request on the model computes with `threads` CPU threads (Ollama's runner
    keeps num_thread for every request); the engine clamps it to its configured count."""
    if threads is not None:
        engine.set_threads(threads)


def _check_session(session: str) -> None:
    if len(session) > MAX_SESSION_CHARS:
        raise InvalidRequest(
            f"session_id has {len(session)} characters; at most {MAX_SESSION_CHARS}",
            param="session_id",
        )
