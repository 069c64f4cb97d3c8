"""`make serve`: run the gRPC core and the REST bridge side by side; Ctrl-C or SIGTERM stops both."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--core", default="127.0.0.1:50051", help="core listen address")
    parser.add_argument("--bridge", default="127.0.0.1:8000", help="bridge listen address")
    parser.add_argument("--core-only", action="store_true", help="run only the gRPC core")
    args, core_extra = parser.parse_known_args()

    commands = [
        [
            sys.executable,
            "-m",
            "core",
            "--models-dir",
            str(args.models_dir),
            "--listen",
            args.core,
            *core_extra,
        ]
    ]
    if not args.core_only:
        commands.append(
            [sys.executable, "-m", "rest_bridge", "--listen", args.bridge, "--core", args.core]
        )
    procs = [subprocess.Popen(cmd) for cmd in commands]

    def stop(_sig: int, _frame: FrameType | None) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while all(proc.poll() is None for proc in procs):
        time.sleep(0.2)
    stop(signal.SIGTERM, None)  # one exited: take the other down too
    codes = [proc.wait() for proc in procs]
    return max(codes, key=abs)


if __name__ == "__main__":
    sys.exit(main())
