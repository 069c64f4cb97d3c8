"""`make bench`: aggregate tok/s of 1 core vs N cores behind one bridge (`--core A,B`), same clients.

Each core gets the same threads and slots; the clients stream /v1/completions through the one
bridge, each with its own prompt, greedy, a fixed token budget. Tokens are counted from usage,
not assumed. N cores only help when there are CPUs (or GPUs) for each: on a 2-CPU machine with
1 thread per core, 2 cores can at best double 1 core's rate, and less while anything else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.bench_clients import REQUEST_TIMEOUT_S, StreamResult, stream_sse
from scripts.bench_servers import ROOT, ServeConfig, Server, clean_env, core_command, model_id
from scripts.bench_serving import PROMPTS

DEFAULT_MODEL = ROOT / "models" / "SmolLM2-135M-Instruct-Q4_1.gguf"


# The bridge reads its cores' model lists this often: after the warm-up it knows each core has
# the model loaded, as it would in steady use.
REFRESH_S = 5.0
_GENERATE_LINE = re.compile(r"InferenceService/Generate OK")


@dataclass(frozen=True)
class Run:
    cores: int
    clients: int
    tokens: int
    wall_s: float
    # Requests each core served in the measured run, e.g. "4+4".
    spread: str

    @property
    def tok_s(self) -> float:
        return self.tokens / self.wall_s


@contextmanager
def cluster(config: ServeConfig, cores: int) -> Iterator[tuple[int, list[Server]]]:
    """`cores` core processes and one bridge over them all; yields the bridge's port and the
    cores."""
    models_dir = config.log_dir / "models"
    models_dir.mkdir(exist_ok=True)
    link = models_dir / config.model.name
    if not link.exists():
        link.symlink_to(config.model.resolve())
    env = clean_env()
    with ExitStack() as stack:
        ports, servers = [], []
        for index in range(cores):
            name = f"core{cores}-{index}"
            server = Server(name, core_command(config, models_dir), config.log_dir, env)
            stack.callback(server.stop)
            servers.append(server)
            found = server.wait_for_log(r"minerva core listening on [\d.]+:(\d+)")
            ports.append(f"127.0.0.1:{found.group(1)}")
        command = [sys.executable, "-m", "rest_bridge", "--listen", "127.0.0.1:0"]
        command += ["--core", ",".join(ports)]
        bridge = Server(f"bridge{cores}", command, config.log_dir, env)
        stack.callback(bridge.stop)
        port = int(bridge.wait_for_log(r"minerva bridge listening on [\d.]+:(\d+)").group(1))
        yield port, servers


def served(cores: list[Server]) -> list[int]:
    """Generate calls each core has logged so far."""
    return [len(_GENERATE_LINE.findall(c.log_path.read_text(errors="replace"))) for c in cores]


async def load(port: int, model: str, clients: int, max_tokens: int) -> tuple[int, float]:
    """`clients` streams at once; (completion tokens, wall seconds)."""
    url = f"http://127.0.0.1:{port}/v1/completions"
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def one(index: int) -> StreamResult:
            body = {
                "model": model,
                "prompt": PROMPTS[index % len(PROMPTS)],
                "max_tokens": max_tokens,
                "temperature": 0,
                "repeat_penalty": 1.0,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            return await stream_sse(http, url, body)

        started = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(clients)))
        return sum(r.tokens for r in results), time.perf_counter() - started


def measure(config: ServeConfig, cores: int, args: argparse.Namespace) -> Run:
    with cluster(config, cores) as (port, servers):
        model = model_id(config.model)
        # Warm-up: every core loads the model (the bridge spreads concurrent streams).
        asyncio.run(load(port, model, max(args.clients, 2 * cores), 4))
        time.sleep(REFRESH_S + 1)
        best: Run | None = None
        for _ in range(args.rounds):
            before = served(servers)
            tokens, wall = asyncio.run(load(port, model, args.clients, args.max_tokens))
            after = served(servers)
            spread = "+".join(str(b - a) for a, b in zip(before, after, strict=True))
            run = Run(cores, args.clients, tokens, wall, spread)
            best = run if best is None or run.tok_s > best.tok_s else best
        assert best is not None
        return best


def report(runs: list[Run], threads: int) -> None:
    print(
        "\n| cores behind one bridge | clients | requests per core | tokens | wall s "
        "| aggregate tok/s | vs 1 core |"
    )
    print("|---|---|---|---|---|---|---|")
    base = runs[0].tok_s
    for run in runs:
        print(
            f"| {run.cores} | {run.clients} | {run.spread} | {run.tokens} | {run.wall_s:.2f} | "
            f"{run.tok_s:.1f} | {run.tok_s / base:.2f}x |"
        )
    cpus = os.cpu_count() or 1
    print(
        f"\n{threads} thread(s) per core on {cpus} CPU(s): {runs[-1].cores} cores need "
        f"{runs[-1].cores * threads} CPUs to scale; with fewer, or with other work on the "
        "machine, the ratio is bounded by CPU, not by the routing."
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--cores", type=int, default=2, help="compared with 1 core")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per core")
    parser.add_argument("--slots", type=int, default=8, help="parallel sequences per core")
    parser.add_argument("--context", type=int, default=2048, help="context per sequence")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=96, help="per stream")
    parser.add_argument("--rounds", type=int, default=2, help="best of this many runs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.model.is_file():
        print(f"{args.model} is missing: run `make models`", file=sys.stderr)
        return 2
    print(
        f"scale-out: model {args.model.name}, {args.threads} thread(s) and {args.slots} slots "
        f"per core, {args.clients} clients x {args.max_tokens} tokens, best of {args.rounds}"
    )
    logs = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    config = ServeConfig(args.model, args.threads, args.slots, args.context, logs)
    try:
        runs = [measure(config, cores, args) for cores in sorted({1, args.cores})]
    except Exception:
        print(f"server logs kept in {logs}", file=sys.stderr)
        raise
    report(runs, args.threads)
    shutil.rmtree(logs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
