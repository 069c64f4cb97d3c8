"""`make bench` (core part): single-stream decode speed and time to first token through Minerva's gRPC
core against in-process llama-cpp-python on the same model, threads and prompts; metadata read times."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
from minerva.v1 import inference_pb2 as pb
from minerva.v1 import inference_pb2_grpc

from scripts.bench_metadata import measure
from scripts.bench_servers import free_port

MODEL_FILE = "SmolLM2-135M-Instruct-Q4_1.gguf"
MODEL_ID = "smollm2-135m-instruct-q4_1"
# Openings the model continues at length (greedy decoding on both sides: identical tokens).
PROMPTS = [
    "Write a long story about a dragon who learns to paint.",
    "Explain in detail how a steam engine works.",
    "Once upon a time, in a small village by the sea, there lived",
    "The history of bread begins thousands of years ago, when",
    "Here is a detailed guide to growing tomatoes at home. First,",
]


@dataclass
class Run:
    ttft_ms: float
    tokens: int
    decode_tps: float

    @classmethod
    def timed(cls, start: float, stamps: list[float]) -> Run:
        """From the request's start and the arrival time of each token."""
        if not stamps:
            raise SystemExit("a benchmark prompt produced no tokens")
        decode_s = stamps[-1] - stamps[0]
        return cls(
            (stamps[0] - start) * 1000,
            len(stamps),
            (len(stamps) - 1) / decode_s if decode_s else 0.0,
        )


def summarize(runs: list[Run]) -> tuple[float, float, int]:
    return (
        statistics.median(r.ttft_ms for r in runs),
        statistics.median(r.decode_tps for r in runs),
        sum(r.tokens for r in runs),
    )


def bench_llama_cpp_python(model: Path, threads: int, max_tokens: int, ctx: int) -> list[Run]:
    from llama_cpp import Llama

    llm = Llama(str(model), n_ctx=ctx, n_threads=threads, n_threads_batch=threads, verbose=False)
    runs = []
    for prompt in [PROMPTS[0], *PROMPTS]:  # the first run warms up and is dropped
        start = time.perf_counter()
        stamps = []
        stream = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, stream=True)
        for chunk in stream:
            if chunk["choices"][0]["finish_reason"] is None:  # the closing chunk carries no token
                stamps.append(time.perf_counter())
        runs.append(Run.timed(start, stamps))
        llm.reset()  # no prefix reuse across prompts: same conditions as a fresh request
    del llm
    return runs[1:]


# Decoding with a JSON Schema grammar and with logprobs, against plain decoding on the same core.
STORY_SCHEMA = (
    '{"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}'
)
VARIANTS: dict[str, tuple[dict[str, object], float]] = {
    "json_schema grammar": ({"json_schema": STORY_SCHEMA}, 0.8),
    "logprobs, top 5": ({"logprobs": True, "top_logprobs": 5}, 0.9),
}


async def _one(
    stub: inference_pb2_grpc.InferenceServiceStub, prompt: str, max_tokens: int, sampling: dict
) -> Run:
    request = pb.GenerateRequest(
        model_id=MODEL_ID,
        text=prompt,
        sampling=pb.SamplingParams(temperature=0.0, max_tokens=max_tokens, **sampling),
    )
    start = time.perf_counter()
    stamps = []
    async for message in stub.Generate(request):
        if message.WhichOneof("event") == "chunk" and message.chunk.token_ids:
            stamps.append(time.perf_counter())
    return Run.timed(start, stamps)


# Decoding right after an embedding call, against the plain runs just before it: the embedding
# thread's OpenMP workers must not outlive the call (core.engine.openmp).
AFTER_EMBEDDING = "plain, after an embedding call"
AFTER_EMBEDDING_TARGET = 0.9


async def bench_grpc(address: str, max_tokens: int, rounds: int) -> dict[str, list[Run]]:
    """Plain decoding and each variant, interleaved per prompt (the order rotating each round),
    so that drift on a busy machine hits every variant alike: runs[name][i] are paired. Then
    plain decoding once more, after an embedding call (paired with the last round's plain)."""
    names = ["plain", *VARIANTS]
    runs: dict[str, list[Run]] = {name: [] for name in names}
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        await _one(stub, PROMPTS[0], max_tokens, {})  # warm-up: load, first allocations
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for prompt in PROMPTS:
                for name in order:
                    sampling = VARIANTS[name][0] if name in VARIANTS else {}
                    runs[name].append(await _one(stub, prompt, max_tokens, sampling))
        inputs = [pb.EmbedInput(text=prompt) for prompt in PROMPTS]
        await stub.Embed(pb.EmbedRequest(model_id=MODEL_ID, inputs=inputs))
        runs[AFTER_EMBEDDING] = [await _one(stub, p, max_tokens, {}) for p in PROMPTS]
    return runs


def start_core(models_dir: Path, threads: int, ctx: int) -> tuple[subprocess.Popen[str], str]:
    address = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "core",
            "--models-dir",
            str(models_dir),
            "--listen",
            address,
            "--threads",
            str(threads),
            "--context-size",
            str(ctx),
            "--log-level",
            "WARNING",
        ],
        cwd=Path(__file__).resolve().parent.parent,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", int(address.rsplit(":", 1)[1]))) == 0:
                return proc, address
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("core did not start")


def print_after_embedding(runs: dict[str, list[Run]]) -> None:
    after, before = runs[AFTER_EMBEDDING], runs["plain"][-len(PROMPTS) :]
    ratio = statistics.median(
        a.decode_tps / b.decode_tps for a, b in zip(after, before, strict=True)
    )
    verdict = "PASS" if ratio >= AFTER_EMBEDDING_TARGET else "MISS"
    print(
        f"\n{AFTER_EMBEDDING:<28}{summarize(after)[1]:>10.1f}{summarize(before)[1]:>10.1f}"
        f"{ratio:>8.2f}  >= {AFTER_EMBEDDING_TARGET} {verdict}"
    )
    print("(decode tok/s after, before; ratio: median over prompts of after / before)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--context-size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds over the prompts")
    args = parser.parse_args()
    model = args.models_dir / MODEL_FILE

    print(
        f"model {model.name}, {args.threads} threads, {len(PROMPTS)} prompts x {args.max_tokens} tokens, greedy"
    )
    direct = summarize(
        bench_llama_cpp_python(model, args.threads, args.max_tokens, args.context_size)
    )
    proc, address = start_core(args.models_dir, args.threads, args.context_size)
    try:
        runs = asyncio.run(bench_grpc(address, args.max_tokens, args.rounds))
        via_grpc = summarize(runs["plain"])
        variants = {name: summarize(runs[name]) for name in VARIANTS}
    finally:
        proc.terminate()
        proc.wait(30)

    print(f"\n{'single stream':<28}{'llama-cpp-python':>18}{'Minerva gRPC':>16}{'ratio':>8}")
    print(
        f"{'decode tokens/s (median)':<28}{direct[1]:>18.1f}{via_grpc[1]:>16.1f}{via_grpc[1] / direct[1]:>8.2f}"
    )
    print(
        f"{'time to first token ms':<28}{direct[0]:>18.1f}{via_grpc[0]:>16.1f}{via_grpc[0] / direct[0]:>8.2f}"
    )
    print(f"{'tokens generated':<28}{direct[2]:>18d}{via_grpc[2]:>16d}")

    print(f"\n{'Minerva gRPC decode tok/s':<28}{'with':>10}{'plain':>10}{'ratio':>8}  target")
    print("(ratio: median over paired runs, same prompt and round, of with / plain)")
    for name, (_, target) in VARIANTS.items():
        pairs = zip(runs[name], runs["plain"], strict=True)
        ratio = statistics.median(v.decode_tps / p.decode_tps for v, p in pairs if p.decode_tps)
        verdict = "PASS" if ratio >= target else "MISS"
        print(
            f"{name:<28}{variants[name][1]:>10.1f}{via_grpc[1]:>10.1f}{ratio:>8.2f}  >= {target} {verdict}"
        )
    print_after_embedding(runs)

    print("\nmetadata (header) reads")
    for name, value in measure(model).items():
        print(f"  {name:<40}{value:>10.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
