"""`make bench`: Minerva (bridge, gRPC) against llama-server and in-process llama-cpp-python; one table."""

# Every path serves the same model with the same threads, slots and per-sequence context; greedy,
# repeat_penalty 1. Load: 1..16 concurrent streams, each with its own prompt; tokens are counted,
# not assumed. Chat: conversations with long distinct system prompts, turns interleaved, to see
# whether a server keeps each conversation's prefix. Only one server computes at a time: on a
# small machine two llama.cpp processes starve each other. In-process llama-cpp-python stays
# loaded (idle) beside Minerva so that their 1-client runs alternate round by round.

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
from minerva.v1 import inference_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.bench_clients import (
    REQUEST_TIMEOUT_S,
    StreamResult,
    in_process,
    stream_grpc,
    stream_ndjson,
    stream_sse,
)
from scripts.bench_report import (
    BRIDGE,
    GRPC,
    IN_PROCESS,
    LLAMA_SERVER,
    OLLAMA_CHAT,
    OPENAI_CHAT,
    Results,
    Row,
    Turn,
    report,
)
from scripts.bench_servers import (
    ROOT,
    MinervaPorts,
    ServeConfig,
    build_llama_server,
    llama_server,
    minerva,
    model_id,
)

DEFAULT_MODEL = ROOT / "models" / "SmolLM2-135M-Instruct-Q4_1.gguf"
# Prompts that keep the model going for the whole budget: one per client.
PROMPTS = (
    "1, 2, 3, 4, 5,",
    "Monday, Tuesday, Wednesday,",
    "a, b, c, d, e,",
    "10, 20, 30, 40,",
    "January, February, March,",
    "2, 4, 6, 8, 10,",
    "100, 99, 98, 97,",
    "red, orange, yellow, green,",
    "5, 10, 15, 20,",
    "one, two, three, four,",
    "A, B, C, D, E,",
    "1, 3, 5, 7, 9,",
    "first, second, third, fourth,",
    "z, y, x, w, v,",
    "1000, 2000, 3000, 4000,",
    "Mercury, Venus, Earth, Mars,",
)
# System prompts are drawn from these words, one seed per conversation: distinct from the start.
NOTE_WORDS = (
    "river stone garden window candle forest market bridge harbor meadow lantern valley copper "
    "silver orchard island mountain village kettle ribbon pepper thunder winter summer autumn "
    "spring blanket compass engine ladder mirror pocket saddle timber velvet whistle anchor "
    "barrel castle desert feather glacier hammer jacket kitten lemon marble needle ocean pebble "
    "quilt rocket shadow tunnel umbrella violin wagon yellow zebra basket cactus dolphin eagle "
    "falcon ginger helmet igloo jungle koala ladle magnet nectar olive parrot quartz rabbit "
    "sparrow tiger unicorn walnut yarn bright quiet gentle rapid narrow ancient golden hollow "
    "humble silent steady tender wild careful curious distant eager frozen heavy honest lively"
)

StreamFn = Callable[[str], Awaitable[StreamResult]]
Messages = list[dict[str, str]]
ChatFn = Callable[[str, Messages], Awaitable[StreamResult]]


@dataclass(frozen=True)
class Plan:
    """What to measure, from the command line."""

    clients: Sequence[int]
    rounds: int
    max_tokens: int
    conversations: int
    turns: int
    chat_max_tokens: int
    system_words: int


@dataclass
class Session:
    """An HTTP session for one server's measurements, plus the model id to name in bodies."""

    http: aiohttp.ClientSession
    model: str
    plan: Plan
    extra: dict[str, object] = field(default_factory=dict)

    def completion(self, url: str) -> StreamFn:
        def stream(prompt: str) -> Awaitable[StreamResult]:
            body = self._body(prompt=prompt, max_tokens=self.plan.max_tokens)
            return stream_sse(self.http, url, body)

        return stream

    def chat(self, url: str, affinity: bool) -> ChatFn:
        """Sends each conversation's key as `x-session-affinity` when `affinity`."""

        def send(key: str, messages: Messages) -> Awaitable[StreamResult]:
            body = self._body(messages=list(messages), max_tokens=self.plan.chat_max_tokens)
            headers = {"x-session-affinity": key} if affinity else None
            return stream_sse(self.http, url, body, headers)

        return send

    def one_chat(self, url: str) -> StreamFn:
        """The prompt as one user message, streamed over OpenAI's chat route."""

        def stream(prompt: str) -> Awaitable[StreamResult]:
            messages = [{"role": "user", "content": prompt}]
            return stream_sse(
                self.http, url, self._body(messages=messages, max_tokens=self.plan.max_tokens)
            )

        return stream

    def ollama_chat(self, url: str) -> StreamFn:
        """The same over Ollama's /api/chat (NDJSON), with the same sampling."""

        def stream(prompt: str) -> Awaitable[StreamResult]:
            options = {"temperature": 0, "repeat_penalty": 1.0, "num_predict": self.plan.max_tokens}
            body = {
                "model": self.model,
                "messages": [{"role": "user", "content": prompt}],
                "options": options,
            }
            return stream_ndjson(self.http, url, body)

        return stream

    def _body(self, **fields: object) -> dict[str, object]:
        return {
            "model": self.model,
            "temperature": 0,
            "repeat_penalty": 1.0,
            "stream": True,
            "stream_options": {"include_usage": True},
            **fields,
            **self.extra,
        }


@asynccontextmanager
async def http_session(
    model: str, plan: Plan, extra: dict[str, object] | None = None
) -> AsyncIterator[Session]:
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    # A fresh connection per request: llama-server (cpp-httplib) may close an idle keep-alive
    # connection that aiohttp would then reuse ("Can not write request body"). Loopback connects
    # cost well under a millisecond, the same for every server.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        yield Session(http, model, plan, extra or {})


# --- load ---------------------------------------------------------------------------------------


async def run_load(path: str, clients: int, stream: StreamFn) -> Row:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(clients)]
    start = time.perf_counter()
    results = await asyncio.gather(*(stream(prompt) for prompt in prompts))
    wall = time.perf_counter() - start
    return Row(
        path, clients, sum(r.tokens for r in results), wall, tuple(r.ttft_s for r in results)
    )


async def measure_load(
    paths: dict[str, StreamFn],
    levels: Sequence[int],
    rounds: int,
    solo: dict[str, StreamFn] | None = None,
) -> list[Row]:
    """Best of `rounds` per (path, clients): other work on a shared box only ever slows a run.
    `solo` paths serve one client at a time: measured at 1 client only, in the same rounds, so
    a slow spell of the machine falls on both sides of a ratio alike."""
    solo = solo or {}
    for warm_up in [*paths.values(), *solo.values()]:
        await warm_up(PROMPTS[0])  # loads the model, fills caches
    best: dict[tuple[str, int], Row] = {}
    for round_no in range(1, rounds + 1):
        for clients in levels:
            here = {**paths, **solo} if clients == 1 else paths
            for name, stream in here.items():
                row = await run_load(name, clients, stream)
                print(
                    f"  round {round_no}: {clients:>2} client(s) via {name}: "
                    f"{row.tok_per_s:.1f} tok/s, TTFT p50 {row.ttft_p50_s * 1000:.0f} ms",
                    flush=True,
                )
                key = (name, clients)
                if key not in best or row.tok_per_s > best[key].tok_per_s:
                    best[key] = row
    return list(best.values())


# --- multi-turn chat ----------------------------------------------------------------------------


def system_prompt(conversation: int, words: int) -> str:
    rng, vocabulary = random.Random(conversation), NOTE_WORDS.split()
    notes = " ".join(rng.choice(vocabulary) for _ in range(words))
    return f"Notes for conversation {conversation}: {notes}. Answer briefly, using the notes."


def user_message(conversation: int, turn: int) -> str:
    word = random.Random(f"{conversation}/{turn}").choice(NOTE_WORDS.split())
    return f"Question {turn + 1}: what do the notes say about the {word}?"


async def converse(name: str, chat: ChatFn, plan: Plan) -> list[Turn]:
    """Conversations interleaved turn by turn; each turn resends the whole history."""
    await chat("warm-up", [{"role": "user", "content": "Say hello."}])  # first chat: template
    histories = [
        [{"role": "system", "content": system_prompt(conv, plan.system_words)}]
        for conv in range(1, plan.conversations + 1)
    ]
    turns = []
    for turn in range(plan.turns):
        for conv, messages in enumerate(histories, start=1):
            messages.append({"role": "user", "content": user_message(conv, turn)})
            result = await chat(f"conv-{conv}", messages)
            messages.append({"role": "assistant", "content": result.text})
            turns.append(Turn(conv, turn, result))
        print(
            f"  {name}: turn {turn + 1}/{plan.turns} of {len(histories)} conversations", flush=True
        )
    return turns


# --- one phase per server -------------------------------------------------------------------------


def minerva_phase(config: ServeConfig, plan: Plan, results: Results, with_in_process: bool) -> None:
    """Minerva, and in-process llama-cpp-python in this process beside it (idle while the other
    runs: a loaded model computes nothing between requests), measured in alternation."""
    with contextlib.ExitStack() as stack:
        solo = {}
        if with_in_process:
            llm = stack.enter_context(
                in_process(config.model, config.threads, config.context, plan.max_tokens)
            )
            solo[IN_PROCESS] = llm.stream
        ports = stack.enter_context(minerva(config))
        asyncio.run(measure_minerva(ports, model_id(config.model), plan, results, solo))


async def measure_minerva(
    ports: MinervaPorts, model: str, plan: Plan, results: Results, solo: dict[str, StreamFn]
) -> None:
    base = f"http://127.0.0.1:{ports.bridge}/v1"
    async with (
        http_session(model, plan) as session,
        grpc.aio.insecure_channel(f"127.0.0.1:{ports.core}") as channel,
    ):
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        paths = {
            GRPC: lambda prompt: stream_grpc(stub, model, prompt, plan.max_tokens),
            BRIDGE: session.completion(f"{base}/completions"),
        }
        results.rows += await measure_load(paths, plan.clients, plan.rounds, solo)
        dialects = {
            OPENAI_CHAT: session.one_chat(f"{base}/chat/completions"),
            OLLAMA_CHAT: session.ollama_chat(f"http://127.0.0.1:{ports.bridge}/api/chat"),
        }
        results.rows += await measure_load(dialects, [1], plan.rounds + 2)
        chat = session.chat(f"{base}/chat/completions", affinity=True)
        results.chats[BRIDGE] = await converse(BRIDGE, chat, plan)


def llama_server_phase(binary: Path, config: ServeConfig, plan: Plan, results: Results) -> None:
    with llama_server(binary, config) as port:
        asyncio.run(measure_llama_server(port, model_id(config.model), plan, results))


async def measure_llama_server(port: int, model: str, plan: Plan, results: Results) -> None:
    base = f"http://127.0.0.1:{port}/v1"
    async with http_session(model, plan, {"cache_prompt": True}) as session:
        paths = {LLAMA_SERVER: session.completion(f"{base}/completions")}
        results.rows += await measure_load(paths, plan.clients, plan.rounds)
        chat = session.chat(f"{base}/chat/completions", affinity=False)
        results.chats[LLAMA_SERVER] = await converse(LLAMA_SERVER, chat, plan)


def run_phase(name: str, phase: Callable[[], None], results: Results) -> None:
    print(f"\n== {name}", flush=True)
    try:
        phase()
    except Exception as error:  # one path failing must not hide the others' numbers
        traceback.print_exc()
        results.errors.append(f"{name} failed: {error}")


def find_llama_server(args: argparse.Namespace, results: Results) -> Path | None:
    if args.skip_llama_server:
        return None
    if args.llama_server:
        return Path(args.llama_server)
    print("finding or building llama-server (about 10 minutes on 2 cores, once)...", flush=True)
    try:
        return build_llama_server()
    except (RuntimeError, OSError) as error:
        results.notes.append(f"llama-server unavailable, its rows are missing: {error}")
        return None


# --- command line -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    def ints(text: str) -> list[int]:
        return [int(part) for part in text.split(",")]

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--slots", type=int, default=8, help="parallel sequences per server")
    parser.add_argument("--context", type=int, default=2048, help="context per sequence")
    parser.add_argument("--max-tokens", type=int, default=96, help="per load stream")
    parser.add_argument("--clients", type=ints, default=[1, 4, 8, 16], help="e.g. 1,4,8,16")
    parser.add_argument("--rounds", type=int, default=2, help="best of this many load runs")
    parser.add_argument("--conversations", type=int, default=4)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--chat-max-tokens", type=int, default=16, help="per chat turn")
    parser.add_argument("--system-words", type=int, default=650, help="about 700 tokens")
    parser.add_argument("--llama-server", help="this llama-server binary instead of building one")
    parser.add_argument("--skip-llama-server", action="store_true")
    parser.add_argument("--skip-in-process", action="store_true")
    return parser.parse_args(argv)


def plan_from(args: argparse.Namespace) -> Plan:
    return Plan(
        clients=args.clients,
        rounds=args.rounds,
        max_tokens=args.max_tokens,
        conversations=args.conversations,
        turns=args.turns,
        chat_max_tokens=args.chat_max_tokens,
        system_words=args.system_words,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.model.is_file():
        print(f"{args.model} is missing: run `make models`", file=sys.stderr)
        return 2
    results, plan = Results(), plan_from(args)
    binary = find_llama_server(args, results)
    print(
        f"model {args.model.name}, {args.threads} threads, {args.slots} slots x {args.context} "
        f"context, {args.max_tokens} tokens/stream, best of {args.rounds} rounds"
    )
    logs = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    config = ServeConfig(args.model, args.threads, args.slots, args.context, logs)
    with_in_process = not args.skip_in_process
    name = f"Minerva and {IN_PROCESS}" if with_in_process else "Minerva"
    run_phase(name, lambda: minerva_phase(config, plan, results, with_in_process), results)
    if binary:
        run_phase(LLAMA_SERVER, lambda: llama_server_phase(binary, config, plan, results), results)
    report(results, plan.clients)
    if results.errors:
        print(f"server logs kept in {logs}", file=sys.stderr)
        return 1
    shutil.rmtree(logs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
