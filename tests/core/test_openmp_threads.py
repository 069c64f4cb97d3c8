"""Idle engines give their OpenMP worker threads back (core.engine.openmp): with a pool left over
from one embedding call, libgomp slowed every later generation in the process ~3x."""

from __future__ import annotations

import json
import shutil
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
        ("libomp.so.5", False),  # LLVM's and Intel's pause the whole process: left alone
        ("libiomp5.so", False),
        ("libgomputer.so", False),
        ("libggml-cpu.so.0", False),
    ],
)
def test_libgomp_is_found_by_file_name(name: str, runtime: bool) -> None:
    assert bool(openmp._LIBGOMP.match(name)) is runtime


MAPS = """\
7f1 r--p 00000000 fe:00 1 /usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0
7f2 r-xp 00001000 fe:00 1 /usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0
7f3 r--p 00000000 fe:00 2 /venv/llama_cpp/lib/libgomp-a34b3233.so.1 (deleted)
7f4 r--p 00000000 fe:00 3 /venv/llama_cpp/lib/libggml-cpu.so
7f5 rw-p 00000000 00:00 0
"""


def test_libgomp_is_found_in_the_maps_even_when_replaced_on_disk() -> None:
    # A package upgrade replaces the file under a running server: the maps then say "(deleted)"
    # and the loaded copy is reached by the name it was loaded under (RTLD_NOLOAD).
    assert openmp.libgomp_paths(MAPS) == [
        "/usr/lib/x86_64-linux-gnu/libgomp.so.1.0.0",
        "/venv/llama_cpp/lib/libgomp-a34b3233.so.1",
    ]


def test_only_a_loaded_runtime_is_reached(tmp_path: Path) -> None:
    loaded = openmp.libgomp_paths(Path("/proc/self/maps").read_text())
    if not loaded:
        pytest.skip("llama.cpp here is not built with libgomp")
    assert openmp._pause_function(loaded[0]) is not None
    # Never loaded: not opened either (the file exists, RTLD_NOLOAD refuses it).
    copy = tmp_path / "libgomp.so.1"
    shutil.copy(loaded[0], copy)
    assert openmp._pause_function(str(copy)) is None
