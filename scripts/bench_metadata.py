"""Benchmark header metadata reads: cold, cached, a 150k-entry vocabulary, and gguf.GGUFReader."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np

from core.metadata.cache import HeaderCache
from core.metadata.gguf_reader import read_gguf
from core.metadata.types import ModelFormat

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "models" / "SmolLM2-135M-Instruct-Q4_1.gguf"
BIG_VOCAB = 150_000
COLD_RUNS = 15
CACHED_RUNS = 1000


def write_big_vocab_gguf(path: Path, vocab: int = BIG_VOCAB) -> Path:
    """A "llama" GGUF whose header carries vocab tokens, scores, types and merges."""
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("synthetic 150k vocabulary")
    writer.add_block_count(1)
    writer.add_context_length(4096)
    writer.add_embedding_length(64)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"tok{i:06d}" for i in range(vocab)])
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types([1] * vocab)
    writer.add_token_merges([f"t{i % 977} k{i}" for i in range(vocab)])
    writer.add_chat_template("{{ messages }}")
    writer.add_tensor("token_embd.weight", np.zeros((16, 64), dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.zeros(64, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _times_ms(fn: Callable[[], object], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def measure(default_model: Path) -> dict[str, float]:
    """Milliseconds for each way of reading metadata (page cache warm, our cache bypassed)."""
    cold = _times_ms(lambda: read_gguf(default_model), COLD_RUNS)
    cache = HeaderCache()
    cache.get(default_model, ModelFormat.GGUF)
    cached = _times_ms(lambda: cache.get(default_model, ModelFormat.GGUF), CACHED_RUNS)
    with tempfile.TemporaryDirectory(prefix="minerva-bench-") as tmp:
        big = write_big_vocab_gguf(Path(tmp) / "vocab150k.gguf")
        big_cold = _times_ms(lambda: read_gguf(big), COLD_RUNS)
    library = _times_ms(lambda: gguf.GGUFReader(default_model), 1)
    return {
        "default_cold_best_ms": min(cold),
        "default_cold_median_ms": statistics.median(cold),
        "default_cached_median_ms": statistics.median(cached),
        "vocab150k_cold_best_ms": min(big_cold),
        "vocab150k_cold_median_ms": statistics.median(big_cold),
        "gguf_library_reader_ms": library[0],
    }


TARGETS_MS = {
    "default_cold_median_ms": 20.0,
    "default_cached_median_ms": 1.0,
    "vocab150k_cold_median_ms": 50.0,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    args = parser.parse_args(argv)
    if not args.model.is_file():
        print(f"error: {args.model} is missing: run `make models`", file=sys.stderr)
        return 1
    results = measure(args.model)
    print(f"{'measurement':<28} {'ms':>10} {'target':>8}")
    for name, value in results.items():
        target = TARGETS_MS.get(name)
        mark = "" if target is None else f"< {target:g}" + (" ok" if value < target else " MISS")
        print(f"{name:<28} {value:>10.3f} {mark:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
