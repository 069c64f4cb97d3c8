"""Streaming load through the REST bridge, straight through gRPC, and llama_cpp.server; one table."""

# Every path serves the same model with the same threads: 1, 4 and 8 concurrent clients, each with
# its own prompt, temperature 0, repeat_penalty 1 (llama_cpp.server defaults to 1.1), max_tokens 96
# (actual tokens are counted, not assumed). Servers are started and stopped here, loopback only.

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
from minerva.v1 import inference_pb2, inference_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models" / "SmolLM2-135M-Instruct-Q4_1.gguf"
START_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 300.0
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
)


@dataclass(frozen=True)
class StreamResult:
    tokens: int
    ttft_s: float


@dataclass(frozen=True)
class Row:
    clients: int
    path: str
    tokens: int
    wall_s: float
    mean_ttft_s: float

    @property
    def tok_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0


StreamFn = Callable[[str], Awaitable[StreamResult]]


class Server:
    """A child process whose output goes to a log file; ready once `ready` says so."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env
            )

    def wait_for_log(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log_path.read_text(errors="replace"))
            if found:
                return found
            self._check_alive()
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start; see {self.log_path}")

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def model_id(model: Path) -> str:
    return model.stem.lower()


# --- the three ways in ------------------------------------------------------------------------


async def stream_http(
    session: aiohttp.ClientSession, url: str, body: dict[str, object], count_usage: bool
) -> StreamResult:
    """One /v1/completions stream. Tokens: the usage chunk when asked for, else text chunks."""
    start = time.perf_counter()
    ttft, chunks, usage_tokens = 0.0, 0, None
    async with session.post(url, json=body) as response:
        response.raise_for_status()
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line.removeprefix("data: "))
            if event.get("usage"):
                usage_tokens = event["usage"]["completion_tokens"]
            for choice in event.get("choices", []):
                if choice.get("finish_reason") is None:
                    chunks += 1
                if choice.get("text") and not ttft:
                    ttft = time.perf_counter() - start
    tokens = usage_tokens if count_usage and usage_tokens is not None else chunks
    return StreamResult(tokens, ttft)


async def stream_grpc(
    stub: inference_pb2_grpc.InferenceServiceStub, model: str, prompt: str, max_tokens: int
) -> StreamResult:
    request = inference_pb2.GenerateRequest(
        model_id=model,
        text=prompt,
        sampling=inference_pb2.SamplingParams(
            temperature=0, repeat_penalty=1.0, max_tokens=max_tokens
        ),
    )
    start = time.perf_counter()
    ttft, tokens = 0.0, 0
    async for event in stub.Generate(request, timeout=REQUEST_TIMEOUT_S):
        if event.WhichOneof("event") == "chunk" and event.chunk.text and not ttft:
            ttft = time.perf_counter() - start
        elif event.WhichOneof("event") == "final":
            tokens = event.final.usage.completion_tokens
    return StreamResult(tokens, ttft)


# --- load ---------------------------------------------------------------------------------------


async def run_load(path: str, clients: int, stream: StreamFn) -> Row:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(clients)]
    start = time.perf_counter()
    results = await asyncio.gather(*(stream(prompt) for prompt in prompts))
    wall = time.perf_counter() - start
    mean_ttft = sum(r.ttft_s for r in results) / len(results)
    return Row(clients, path, sum(r.tokens for r in results), wall, mean_ttft)


async def measure(
    paths: dict[str, StreamFn], client_counts: Sequence[int], rounds: int
) -> list[Row]:
    """Best of `rounds` per (clients, path): other work on a shared box only ever slows a run."""
    for warm_up in paths.values():
        await warm_up(PROMPTS[0])  # loads the model, fills caches
    best: dict[tuple[int, str], Row] = {}
    for round_no in range(1, rounds + 1):
        for clients in client_counts:
            for name, stream in paths.items():
                row = await run_load(name, clients, stream)
                print(
                    f"  round {round_no}: {clients} client(s) via {name}: "
                    f"{row.tok_per_s:.1f} tok/s",
                    flush=True,
                )
                key = (clients, name)
                if key not in best or row.tok_per_s > best[key].tok_per_s:
                    best[key] = row
    return list(best.values())


def http_paths(
    session: aiohttp.ClientSession,
    bridge_url: str | None,
    llama_url: str | None,
    model: str,
    max_tokens: int,
) -> dict[str, StreamFn]:
    def body(prompt: str, usage: bool) -> dict[str, object]:
        fields: dict[str, object] = {
            "model": model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "repeat_penalty": 1.0,
            "stream": True,
        }
        if usage:
            fields["stream_options"] = {"include_usage": True}
        return fields

    paths: dict[str, StreamFn] = {}
    if bridge_url:
        paths["bridge (SSE)"] = lambda p: stream_http(session, bridge_url, body(p, True), True)
    if llama_url:
        paths["llama_cpp.server"] = lambda p: stream_http(session, llama_url, body(p, False), False)
    return paths


async def bench(
    args: argparse.Namespace, core_port: int, bridge_port: int, llama_port: int | None
) -> list[Row]:
    model = model_id(args.model)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=0)
    async with (
        aiohttp.ClientSession(timeout=timeout, connector=connector) as session,
        grpc.aio.insecure_channel(f"127.0.0.1:{core_port}") as channel,
    ):
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        paths = http_paths(
            session,
            f"http://127.0.0.1:{bridge_port}/v1/completions",
            f"http://127.0.0.1:{llama_port}/v1/completions" if llama_port else None,
            model,
            args.tokens,
        )
        paths = {"gRPC direct": lambda p: stream_grpc(stub, model, p, args.tokens), **paths}
        return await measure(paths, args.clients, args.rounds)


# --- servers and report -------------------------------------------------------------------------


def start_servers(
    args: argparse.Namespace, log_dir: Path
) -> tuple[list[Server], int, int, int | None]:
    models_dir = log_dir / "models"
    models_dir.mkdir()
    (models_dir / args.model.name).symlink_to(args.model.resolve())
    env = dict(os.environ)
    env.pop("MINERVA_API_KEYS", None)
    servers: list[Server] = []
    try:
        core = Server(
            "core",
            [
                "-m",
                "core",
                "--models-dir",
                str(models_dir),
                "--listen",
                "127.0.0.1:0",
                "--threads",
                str(args.threads),
                "--context-size",
                str(args.context),
            ],
            log_dir,
            env,
        )
        servers.append(core)
        core_port = int(core.wait_for_log(r"minerva core listening on [\d.]+:(\d+)").group(1))
        bridge = Server(
            "bridge",
            ["-m", "rest_bridge", "--listen", "127.0.0.1:0", "--core", f"127.0.0.1:{core_port}"],
            log_dir,
            env,
        )
        servers.append(bridge)
        bridge_port = int(bridge.wait_for_log(r"minerva bridge listening on [\d.]+:(\d+)").group(1))
        llama_port = (
            None if args.skip_llama_server else start_llama_server(args, log_dir, env, servers)
        )
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers, core_port, bridge_port, llama_port


def start_llama_server(
    args: argparse.Namespace, log_dir: Path, env: dict[str, str], servers: list[Server]
) -> int | None:
    port = free_port()
    server = Server(
        "llama_cpp.server",
        [
            "-m",
            "llama_cpp.server",
            "--model",
            str(args.model),
            "--model_alias",
            model_id(args.model),
            "--n_threads",
            str(args.threads),
            "--n_threads_batch",
            str(args.threads),
            "--n_ctx",
            str(args.context),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            # Its default stops a running stream when another request arrives.
            "--interrupt_requests",
            "False",
        ],
        log_dir,
        env,
    )
    servers.append(server)
    try:
        server.wait_for_log(r"Uvicorn running on")
    except RuntimeError as error:
        print(
            f"llama_cpp.server unavailable (pip install 'llama-cpp-python[server]'): {error}",
            file=sys.stderr,
        )
        return None
    return port


def print_table(rows: list[Row]) -> None:
    reference = {r.clients: r.tok_per_s for r in rows if r.path == "llama_cpp.server"}
    print()
    print(
        f"{'clients':>7}  {'path':<18} {'tokens':>6} {'agg tok/s':>10} {'mean TTFT ms':>13}"
        f"  {'vs llama_cpp.server':>19}"
    )
    for row in rows:
        ref = reference.get(row.clients)
        ratio = f"{row.tok_per_s / ref:.2f}" if ref else "n/a"
        print(
            f"{row.clients:>7}  {row.path:<18} {row.tokens:>6} {row.tok_per_s:>10.1f} "
            f"{row.mean_ttft_s * 1000:>13.0f}  {ratio:>19}"
        )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--context", type=int, default=2048, help="context size on both servers")
    parser.add_argument("--tokens", type=int, default=96, help="max_tokens per stream")
    parser.add_argument(
        "--clients",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 4, 8],
        help="comma-separated concurrency levels",
    )
    parser.add_argument("--rounds", type=int, default=3, help="best of this many runs")
    parser.add_argument("--skip-llama-server", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.model.is_file():
        print(f"{args.model} is missing: run `make models`", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp:
        servers, core_port, bridge_port, llama_port = start_servers(args, Path(tmp))
        try:
            print(
                f"model {args.model.name}, {args.threads} threads, {args.tokens} tokens/stream, "
                f"best of {args.rounds} rounds"
            )
            rows = asyncio.run(bench(args, core_port, bridge_port, llama_port))
        finally:
            for server in reversed(servers):
                server.stop()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
