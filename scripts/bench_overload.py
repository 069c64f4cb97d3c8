"""`make bench`: overload. 64 clients at once, each sending 4 streaming chat requests in turn, against
one model through the bridge: nothing may be lost (each request is served whole, or refused with a 429/503 that
carries Retry-After) and refusals must be quick (target: p99 time to refusal < 50 ms)."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.bench_servers import ROOT, ServeConfig, minerva, model_id

DEFAULT_MODEL = ROOT / "models" / "SmolLM2-135M-Instruct-Q4_1.gguf"
TARGET_P99_MS = 50.0
TIMEOUT_S = 300.0


@dataclass
class Outcome:
    """One request: `served` (200, whole stream), `refused` (429/503 + Retry-After) or `lost`."""

    kind: str
    status: int
    seconds: float  # to the response head (refused), or to the stream's end (served)
    detail: str = ""


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)

    def of(self, kind: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == kind]


async def one_request(session: aiohttp.ClientSession, url: str, body: dict[str, object]) -> Outcome:
    started = time.perf_counter()
    try:
        async with session.post(url, json=body) as response:
            head = time.perf_counter() - started
            if response.status in (429, 503):
                await response.read()
                ok = "Retry-After" in response.headers
                return Outcome("refused" if ok else "lost", response.status, head, "no Retry-After")
            if response.status != 200:
                return Outcome("lost", response.status, head, (await response.text())[:200])
            return await _read_stream(response, started)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Outcome("lost", 0, time.perf_counter() - started, repr(exc))


async def _read_stream(response: aiohttp.ClientResponse, started: float) -> Outcome:
    finished, done = False, False
    async for raw in response.content:
        line = raw.decode().strip()
        if line == "data: [DONE]":
            done = True
        elif line.startswith("data: "):
            event = json.loads(line.removeprefix("data: "))
            if "error" in event:
                return Outcome("lost", 200, time.perf_counter() - started, str(event["error"]))
            finished |= any(c.get("finish_reason") for c in event.get("choices", ()))
    kind = "served" if finished and done else "lost"
    return Outcome(kind, 200, time.perf_counter() - started, "" if kind == "served" else "cut")


async def client(
    url: str, model: str, index: int, per_client: int, max_tokens: int
) -> list[Outcome]:
    """One client: its own keep-alive connection, `per_client` streams one after another."""
    body = {
        "model": model,
        "stream": True,
        "max_tokens": max_tokens,
        "temperature": 0,
        "messages": [{"role": "user", "content": f"Count from {index} upwards."}],
    }
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        return [await one_request(session, url, body) for _ in range(per_client)]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] if ordered else 0.0


def report(tally: Tally, wall: float) -> bool:
    refused, served, lost = tally.of("refused"), tally.of("served"), tally.of("lost")
    print(
        f"{len(tally.outcomes)} requests in {wall:.1f} s: {len(served)} served whole, "
        f"{len(refused)} refused with Retry-After, {len(lost)} lost"
    )
    print("statuses:", dict(Counter(o.status for o in tally.outcomes)))
    for item in lost[:5]:
        print(f"  lost: status {item.status} after {item.seconds:.2f} s: {item.detail}")
    met = not lost
    if refused:
        ms = [o.seconds * 1000 for o in refused]
        p50, p99 = percentile(ms, 0.5), percentile(ms, 0.99)
        verdict = "PASS" if p99 < TARGET_P99_MS else "MISS"
        print(
            f"time to refusal: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(ms):.1f} ms "
            f"(target p99 < {TARGET_P99_MS:.0f} ms: {verdict})"
        )
        met &= p99 < TARGET_P99_MS
    if served:
        print(
            f"served streams: p50 {percentile([o.seconds for o in served], 0.5):.2f} s to the end"
        )
    print(f"nothing lost: {'PASS' if not lost else 'MISS'}")
    return met


async def run(url: str, model: str, clients: int, per_client: int, max_tokens: int) -> bool:
    started = time.perf_counter()
    batches = await asyncio.gather(
        *(client(url, model, i, per_client, max_tokens) for i in range(clients))
    )
    tally = Tally([o for batch in batches for o in batch])
    return report(tally, time.perf_counter() - started)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--per-client", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    logs = Path(tempfile.mkdtemp(prefix="bench-overload-"))
    config = ServeConfig(args.model, args.threads, args.slots, args.context, logs)
    print(
        f"overload: {args.clients} clients x {args.per_client} streams, {args.slots} slots, "
        f"{args.max_tokens} tokens each, through the bridge"
    )
    with minerva(config) as ports:
        url = f"http://127.0.0.1:{ports.bridge}/v1/chat/completions"
        model = model_id(args.model)
        # One request first, so the model is loaded and the run measures serving, not loading.
        asyncio.run(run(url, model, 1, 1, 2))
        met = asyncio.run(run(url, model, args.clients, args.per_client, args.max_tokens))
    print(f"overload targets: {'PASS' if met else 'MISS'}; server logs in {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
