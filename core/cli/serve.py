"""`minerva serve`: the gRPC core and the REST bridge side by side; Ctrl-C or SIGTERM stops both."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

DEFAULT_BRIDGE = "127.0.0.1:8000"


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--core", default="127.0.0.1:50051", help="core listen address")
    parser.add_argument("--bridge", default=DEFAULT_BRIDGE, help="bridge listen address")
    parser.add_argument("--core-only", action="store_true", help="run only the gRPC core")


def commands(args: argparse.Namespace, core_extra: list[str]) -> list[list[str]]:
    """The processes to start: the core (with the flags serve does not know), then the bridge.
    Both inherit the environment, so MINERVA_API_KEYS reaches both."""
    core = [sys.executable, "-m", "core", "--models-dir", str(args.models_dir)]
    procs = [[*core, "--listen", args.core, *core_extra]]
    if not args.core_only:
        bridge = [sys.executable, "-m", "rest_bridge", "--listen", args.bridge, "--core", args.core]
        procs.append(bridge)
    return procs


def run(args: argparse.Namespace, core_extra: list[str]) -> int:
    """Runs until one process exits or a signal arrives, then stops the other; the worst exit
    code wins."""
    procs = [subprocess.Popen(cmd) for cmd in commands(args, core_extra)]
    signalled: set[int] = set()

    def stop(_sig: int, _frame: FrameType | None) -> None:
        # Once each: a second SIGTERM would kill a process that is still draining (its
        # handler is gone once its event loop has stopped).
        for proc in procs:
            if proc.poll() is None and proc.pid not in signalled:
                signalled.add(proc.pid)
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while all(proc.poll() is None for proc in procs):
        time.sleep(0.2)
    stop(signal.SIGTERM, None)  # one exited: take the other down too
    codes = [proc.wait() for proc in procs]
    return max(codes, key=abs)
