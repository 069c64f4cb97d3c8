"""The OpenMP runtime llama.cpp's CPU backend computes with: an idle thread hands its workers back.

libgomp keeps a pool of worker threads for every thread that ever ran a parallel region, and
while the pools hold more threads than there are CPUs it stops spinning at barriers and sleeps
on a futex instead, at each of the hundreds of barriers of every token. Measured on this 2-core
machine: a model generating 92 tokens/s dropped to 33 for good after one embedding request (the
embedding thread kept its pool), and so would a second model once both had generated. So the
step loop and the embedder release their workers whenever they go idle; while two of them
compute at once the cores are oversubscribed and libgomp's short spinning is the right thing.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import re
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

# libgomp (GCC; wheels bundle it as libgomp-<hash>.so.1), libomp (LLVM), libiomp5 (Intel).
_RUNTIME = re.compile(r"^lib(g|i)?omp[0-9]*(-[0-9a-f]+)?\.so")
# OpenMP 5.0 omp_pause_resource_t: soft pause frees the threads, the runtime stays usable.
_OMP_PAUSE_SOFT = 1


@functools.cache
def _pause_functions() -> tuple[Callable[[int], int], ...]:
    """omp_pause_resource_all of each OpenMP runtime loaded in this process (none: not built
    with OpenMP, or not Linux). Looked up once, after llama.cpp (and so its runtime) is loaded."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return ()
    fields = (line.split(maxsplit=5) for line in maps.splitlines())
    paths = {f[5] for f in fields if len(f) == 6}  # address perms offset dev inode path
    functions: list[Callable[[int], int]] = []
    for path in sorted(p for p in paths if _RUNTIME.match(Path(p).name)):
        pause = getattr(ctypes.CDLL(path), "omp_pause_resource_all", None)  # the loaded copy
        if pause is not None:
            pause.argtypes, pause.restype = [ctypes.c_int], ctypes.c_int
            functions.append(pause)
    return tuple(functions)


def release_threads() -> None:
    """Let the calling thread's OpenMP worker threads go (the next parallel region on it starts
    new ones). Call between computations, never inside one."""
    for pause in _pause_functions():
        if pause(_OMP_PAUSE_SOFT) != 0:
            log.debug("omp_pause_resource_all refused (a parallel region is running)")
