"""Idle engines give their OpenMP worker threads back (core.engine.openmp): with a pool left over
from one embedding call, libgomp slowed every later generation in the process ~3x."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core.engine import openmp

ROOT = Path(__file__).resolve().parents[2]

# In a process of its own: other tests' threads would blur the count. Threads outside Python's
# own are llama.cpp's OpenMP workers; each count is taken once the engines are idle (polled, the
# step thread lets go after its request ends), or mid-stream to show the workers are seen at all.
SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, sys, threading, time
    from core.engine.llama_backend import LoadOptions, init_backend
    from core.engine.llama_engine import LlamaEngine
    from core.engine.sampling import Sampling
    from core.engine.types import GenerationRequest

    def native():
        return len(os.listdir("/proc/self/task")) - threading.active_count()

    async def settled(baseline):
        for _ in range(100):
            if native() <= baseline:
                break
            await asyncio.sleep(0.05)
        return native()

    async def generate(engine, seen):
        request = GenerationRequest(
            prompt=(1, 22, 333, 4444), sampling=Sampling(temperature=0), max_tokens=24,
            arrived=time.perf_counter(),
        )
        async for _ in engine.generate(request):
            seen.append(native())

    async def main():
        init_backend()
        opts = LoadOptions(
            path=sys.argv[1], context_size=256, threads=2, n_gpu_layers=0, slots=2, kv_tokens=512
        )
        a = await asyncio.to_thread(LlamaEngine.load, "a", opts, 4)
        b = await asyncio.to_thread(LlamaEngine.load, "b", opts, 4)
        counts, seen = {"loaded": native()}, []
        await generate(a, seen)
        counts["streaming"] = max(seen)
        counts["a generated"] = await settled(counts["loaded"])
        await a.embed([[1, 22, 333], [4444, 55]], True)
        counts["a embedded"] = await settled(counts["loaded"])
        await generate(b, [])
        counts["b generated"] = await settled(counts["loaded"])
        await a.close()
        await b.close()
        print(json.dumps(counts))

    asyncio.run(main())
    """
)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_idle_engines_keep_no_openmp_workers(default_model_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(default_model_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    loaded = counts.pop("loaded")
    assert counts.pop("streaming") > loaded  # a 2-thread decode has a worker we can see
    assert counts == {"a generated": loaded, "a embedded": loaded, "b generated": loaded}


@pytest.mark.parametrize(
    ("name", "runtime"),
    [
        ("libgomp.so.1.0.0", True),
        ("libgomp-a34b3233.so.1", True),  # as auditwheel bundles it
        ("libomp.so.5", True),
        ("libiomp5.so", True),
        ("libgomputer.so", False),
        ("libggml-cpu.so.0", False),
        ("libllama.so", False),
    ],
)
def test_openmp_runtimes_are_found_by_file_name(name: str, runtime: bool) -> None:
    assert bool(openmp._RUNTIME.match(name)) is runtime
