"""What the serving benchmark measured, and its tables and target ratios (PASS/MISS)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from scripts.bench_clients import StreamResult

GRPC = "Minerva gRPC"
BRIDGE = "Minerva bridge"
LLAMA_SERVER = "llama-server"
IN_PROCESS = "llama-cpp-python"
# One chat stream through each of the bridge's dialects.
OPENAI_CHAT = "bridge /v1/chat/completions"
OLLAMA_CHAT = "bridge /api/chat"
PATH_ORDER = (GRPC, BRIDGE, LLAMA_SERVER, IN_PROCESS, OPENAI_CHAT, OLLAMA_CHAT)
TARGET_CLIENTS = 8


@dataclass(frozen=True)
class Row:
    """One (path, clients) load run: every client's stream started at once."""

    path: str
    clients: int
    tokens: int
    wall_s: float
    ttfts_s: tuple[float, ...]

    @property
    def tok_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0

    @property
    def ttft_p50_s(self) -> float:
        return percentile(self.ttfts_s, 0.50)

    @property
    def ttft_p99_s(self) -> float:
        return percentile(self.ttfts_s, 0.99)


@dataclass(frozen=True)
class Turn:
    """One chat request of the multi-turn scenario; turn 0 is a conversation's first."""

    conversation: int
    turn: int
    result: StreamResult


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    chats: dict[str, list[Turn]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def row(self, path: str, clients: int) -> Row | None:
        return next((r for r in self.rows if (r.path, r.clients) == (path, clients)), None)


@dataclass(frozen=True)
class ChatSummary:
    prompt_tokens: float | None  # turn 1, mean
    cold_s: float
    warm_mean_s: float
    warm_p50_s: float
    warm_cached: float | None  # share of warm-turn prompt tokens served from the KV cache

    @property
    def warm_over_cold(self) -> float:
        return self.warm_mean_s / self.cold_s if self.cold_s else math.inf


@dataclass(frozen=True)
class Target:
    label: str
    value: float | None
    bound: float
    at_least: bool

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "n/a"
        met = self.value >= self.bound if self.at_least else self.value <= self.bound
        return "PASS" if met else "MISS"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank: with few samples p99 is the slowest, not an interpolation past it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else 0.0


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize_chat(turns: Sequence[Turn]) -> ChatSummary | None:
    cold = [t.result for t in turns if t.turn == 0]
    warm = [t.result for t in turns if t.turn > 0]
    if not cold or not warm:
        return None
    prompts = [r.prompt_tokens for r in cold if r.prompt_tokens is not None]
    counted = [r for r in warm if r.prompt_tokens and r.cached_tokens is not None]
    cached = ratio(
        sum(r.cached_tokens or 0 for r in counted), sum(r.prompt_tokens or 0 for r in counted)
    )
    return ChatSummary(
        statistics.mean(prompts) if prompts else None,
        statistics.mean(r.ttft_s for r in cold),
        statistics.mean(r.ttft_s for r in warm),
        statistics.median(r.ttft_s for r in warm),
        cached,
    )


# --- printing ---------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_load_table(results: Results) -> None:
    print(
        f"\n{'clients':>7}  {'path':<28} {'tokens':>6} {'agg tok/s':>10} {'TTFT p50 ms':>12}"
        f" {'TTFT p99 ms':>12} {'vs llama-server':>16}"
    )
    order = {path: i for i, path in enumerate(PATH_ORDER)}
    for row in sorted(results.rows, key=lambda r: (r.clients, order.get(r.path, len(order)))):
        reference = results.row(LLAMA_SERVER, row.clients)
        versus = ratio(row.tok_per_s, reference.tok_per_s if reference else None)
        print(
            f"{row.clients:>7}  {row.path:<28} {row.tokens:>6} {row.tok_per_s:>10.1f}"
            f" {row.ttft_p50_s * 1000:>12.0f} {row.ttft_p99_s * 1000:>12.0f} {_fmt(versus, '.2f'):>16}"
        )


def print_chat_table(results: Results) -> None:
    print(
        f"\n{'multi-turn chat':<17} {'prompt tok':>10} {'cold TTFT ms':>13} {'warm mean ms':>13}"
        f" {'warm p50 ms':>12} {'warm/cold':>10} {'warm cached':>12}"
    )
    for path, turns in results.chats.items():
        summary = summarize_chat(turns)
        if summary is None:
            continue
        print(
            f"{path:<17} {_fmt(summary.prompt_tokens, '.0f'):>10} {summary.cold_s * 1000:>13.0f}"
            f" {summary.warm_mean_s * 1000:>13.0f} {summary.warm_p50_s * 1000:>12.0f}"
            f" {summary.warm_over_cold:>10.3f} {_fmt(summary.warm_cached, '.0%'):>12}"
        )


def targets(results: Results, many: int) -> list[Target]:
    def agg(path: str, clients: int) -> float | None:
        row = results.row(path, clients)
        return row.tok_per_s if row else None

    def p50(path: str, clients: int) -> float | None:
        row = results.row(path, clients)
        return row.ttft_p50_s if row else None

    found: list[Target] = []
    for path in (GRPC, BRIDGE):
        found += [
            Target(f"{path}: {many} / 1 clients, aggregate tok/s", ratio(agg(path, many), agg(path, 1)), 1.75, True),
            Target(f"{path} / llama-server: {many} clients, aggregate tok/s", ratio(agg(path, many), agg(LLAMA_SERVER, many)), 1.0, True),
            Target(f"{path} / llama-server: {many} clients, TTFT p50", ratio(p50(path, many), p50(LLAMA_SERVER, many)), 1.0, False),
            Target(f"{path} / in-process llama-cpp-python: 1 client, tok/s", ratio(agg(path, 1), agg(IN_PROCESS, 1)), 1.0, True),
        ]  # fmt: skip
    found.append(
        Target(f"{OLLAMA_CHAT} / {OPENAI_CHAT}: 1 client, tok/s", ratio(agg(OLLAMA_CHAT, 1), agg(OPENAI_CHAT, 1)), 0.97, True)
    )  # fmt: skip
    chat = summarize_chat(results.chats.get(BRIDGE, []))
    found.append(
        Target(f"{BRIDGE}: warm / cold turn TTFT (mean)", chat.warm_over_cold if chat else None, 0.1, False)
    )  # fmt: skip
    return found


def print_targets(found: Sequence[Target]) -> None:
    print()
    for target in found:
        bound = f"{'>=' if target.at_least else '<='} {target.bound:g}"
        print(
            f"{target.verdict:<5} {target.label:<62} {_fmt(target.value, '.3f'):>6}  (target {bound})"
        )


def report(results: Results, clients: Sequence[int]) -> None:
    many = TARGET_CLIENTS if TARGET_CLIENTS in clients else max(clients)
    print_load_table(results)
    print_chat_table(results)
    print_targets(targets(results, many))
    for line in results.notes + results.errors:
        print(f"note: {line}")
