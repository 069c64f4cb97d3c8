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
import os
import re
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

# libgomp (GCC's; wheels bundle it as libgomp-<hash>.so.1). Its soft pause frees only the
# calling thread's workers; LLVM's and Intel's runtimes pause the whole process, so they are
# left alone.
_LIBGOMP = re.compile(r"^libgomp(-[0-9a-f]+)?\.so")
# OpenMP 5.0 omp_pause_resource_t: soft pause frees the threads, the runtime stays usable.
_OMP_PAUSE_SOFT = 1

Pause = Callable[[int], int]


def release_threads() -> None:
    """Let the calling thread's OpenMP worker threads go (the next parallel region on it starts
    new ones). Call between computations, never inside one; never raises."""
    for pause in _pause_functions():
        if pause(_OMP_PAUSE_SOFT) != 0:
            log.debug("omp_pause_resource_all refused (a parallel region is running)")


@functools.cache
def _pause_functions() -> tuple[Pause, ...]:
    """omp_pause_resource_all of each libgomp loaded in this process; none when llama.cpp was
    built without OpenMP, or off Linux. Looked up once: llama.cpp's backends, and their runtime,
    are loaded by llama_backend_init, before any model and so before any caller."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return ()
    return tuple(p for p in map(_pause_function, libgomp_paths(maps)) if p is not None)


def libgomp_paths(maps: str) -> list[str]:
    """The libgomp files a /proc/<pid>/maps text lists, as they were loaded."""
    paths = set()
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)  # address perms offset dev inode path
        if len(fields) == 6:
            path = fields[5].removesuffix(" (deleted)")  # replaced on disk since it was loaded
            if _LIBGOMP.match(Path(path).name):
                paths.add(path)
    return sorted(paths)


def _pause_function(path: str) -> Pause | None:
    """omp_pause_resource_all of the copy already loaded from `path` (RTLD_NOLOAD: never a
    second copy, nor a read of the file), or None."""
    try:
        library = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except OSError as exc:
        log.warning("cannot reach the OpenMP runtime %s: %s", path, exc)
        return None
    pause = getattr(library, "omp_pause_resource_all", None)
    if pause is not None:
        pause.argtypes, pause.restype = [ctypes.c_int], ctypes.c_int
    return pause
