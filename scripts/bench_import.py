"""`make bench` (import part): converting a 135M-shaped SafeTensors checkpoint (SmolLM2's
dimensions, random BF16 weights) to GGUF, f16 and q8_0: wall time and peak resident memory of
the converting process, each against a plain copy of the same checkpoint in the same run (both
read the checkpoint from the page cache: it was just written).

The copy is the floor for context (conversion reads, widens, narrows and writes every value
once; no peer converter runs here without torch). Target: the converting process's peak memory
above an idle interpreter's stays under half the checkpoint's size, i.e. the model is never held
in memory, let alone twice.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.hf_checkpoint import SHAPE_135M, tiny_checkpoint

MEMORY_TARGET = 0.5

# Runs in a fresh interpreter so its peak RSS (VmHWM) is the conversion's alone.
_CHILD = r"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from core.importer.cache import ImportCache
from core.importer.importer import Importer
from core.settings import ImportType
started = time.perf_counter()
out = Importer(ImportCache(Path(sys.argv[2]))).ensure_gguf(
    "bench", Path(sys.argv[1]), ImportType(sys.argv[3]), lambda _f: None
)
seconds = time.perf_counter() - started
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"seconds": seconds, "peak_kb": int(hwm.split()[1]), "bytes": out.stat().st_size}))
"""
_BASELINE = r"""
import json, sys
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
sys.path.insert(0, sys.argv[1])
import core.importer.importer  # the same imports (numpy, gguf) as the converting child
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"peak_kb": int(hwm.split()[1])}))
"""


def _child(code: str, *args: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(f"bench_import: conversion failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=2, help="best of this many runs per type")
    args = p.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="minerva-bench-import-") as tmp:
        work = Path(tmp)
        source = work / "smollm2-shaped"
        tiny_checkpoint(source, shape=SHAPE_135M, dtype="BF16", tied=True)
        weights = source / "model.safetensors"
        size = weights.stat().st_size
        copies = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            shutil.copyfile(weights, work / "copy.safetensors")
            copies.append(time.perf_counter() - started)
            (work / "copy.safetensors").unlink()
        copy_s = min(copies)
        baseline_kb = _child(_BASELINE, str(root))["peak_kb"]
        print(f"\n### SafeTensors import: 135M-shaped checkpoint, BF16, {size / 2**20:.0f} MB")
        print(f"plain copy of the checkpoint: {copy_s:.2f} s; interpreter + numpy + gguf alone: "
              f"{baseline_kb / 1024:.0f} MB peak\n")  # fmt: skip
        print("| output | seconds | vs copy | GGUF MB | peak RSS MB | above baseline MB | "
              "above baseline / checkpoint |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        verdicts = []
        for wanted in ("f16", "q8_0"):
            runs = []
            for r in range(args.rounds):
                cache = work / f"cache-{wanted}-{r}"
                runs.append(_child(_CHILD, str(source), str(cache), wanted, str(root)))
                shutil.rmtree(cache)
            best = min(runs, key=lambda run: run["seconds"])
            peak_mb = max(run["peak_kb"] for run in runs) / 1024
            above = peak_mb - baseline_kb / 1024
            print(f"| {wanted} | {best['seconds']:.2f} | {best['seconds'] / copy_s:.2f} | "
                  f"{best['bytes'] / 2**20:.0f} | {peak_mb:.0f} | {above:.0f} | "
                  f"{above * 2**20 / size:.2f} |")  # fmt: skip
            verdicts.append((f"{wanted} peak memory above baseline / checkpoint size",
                             above * 2**20 / size, f"<= {MEMORY_TARGET}",
                             above * 2**20 / size <= MEMORY_TARGET))  # fmt: skip
        print("\n| target | measured | goal | verdict |\n|---|---|---|---|")
        for name, value, goal, met in verdicts:
            print(f"| {name} | {value:.2f} | {goal} | {'PASS' if met else 'MISS'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
