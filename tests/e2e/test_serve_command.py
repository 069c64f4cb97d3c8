"""`minerva serve` (the installed console script) runs the core and the bridge, and SIGTERM
stops both cleanly."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import DEFAULT_MODEL_ID, DEFAULT_MODEL_PATH
from tests.core.conftest import make_models_dir

pytestmark = pytest.mark.e2e

START_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code, None
    except OSError:
        return 0, None


def test_serve_runs_core_and_bridge_until_sigterm(tmp_path: Path) -> None:
    models = make_models_dir(tmp_path / "models", DEFAULT_MODEL_PATH)
    core, bridge = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    minerva = Path(sys.executable).parent / "minerva"
    argv = [minerva, "serve", "--models-dir", models, "--core", core, "--bridge", bridge]
    # Flags serve does not know go to the core.
    argv += ["--threads", "1", "--allowed-root", DEFAULT_MODEL_PATH.parent]
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while get_json(f"http://{bridge}/health")[0] != 200:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        status, body = get_json(f"http://{bridge}/v1/models")
        assert status == 200
        assert DEFAULT_MODEL_ID in {m["id"] for m in body["data"]}  # type: ignore[index]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log_text = (tmp_path / "serve.log").read_text()
    assert "minerva bridge stopping" in log_text
    assert "core.server" in log_text and "stopped" in log_text
    assert get_json(f"http://{bridge}/health")[0] == 0  # nothing listens any more
