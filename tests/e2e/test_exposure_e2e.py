"""Both processes refuse to start on a non-loopback address without API keys."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("core", ["--listen", "0.0.0.0:0"]),
        ("rest_bridge", ["--listen", "0.0.0.0:0", "--core", "127.0.0.1:1"]),
        ("rest_bridge", ["--listen", "127.0.0.1:0", "--ollama-listen", "0.0.0.0:0"]),
    ],
)
def test_an_open_server_off_loopback_does_not_start(
    tmp_path: Path, module: str, args: list[str]
) -> None:
    extra = ["--models-dir", str(tmp_path)] if module == "core" else []
    done = subprocess.run(
        [sys.executable, "-m", module, *extra, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},  # no MINERVA_API_KEYS from the caller's environment
    )
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "without API keys" in output and "--allow-unauthenticated" in output
    assert "listening" not in output
