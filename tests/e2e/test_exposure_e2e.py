"""Both processes refuse to start on a non-loopback address without API keys; request ids
travel from the client through both processes' logs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import MODEL, Stack, start_stack

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


def test_a_request_id_is_in_both_processes_logs(stack: Stack) -> None:
    rid = "e2e-trace-4242"
    core_before = stack.core.log_path.stat().st_size
    bridge_before = stack.bridge.log_path.stat().st_size
    response = stack.http(
        "POST",
        "/tokenize",
        json.dumps({"content": "Hello", "model": MODEL}).encode(),
        headers={"x-request-id": rid},
    )
    assert response.status == 200
    assert response.headers["x-request-id"] == rid
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        core_log, bridge_log = (
            stack.core.log_text(core_before),
            stack.bridge.log_text(bridge_before),
        )
        if f"[{rid}]" in core_log and f"[{rid}]" in bridge_log:
            break
        time.sleep(0.05)
    assert f"[{rid}]" in core_log and "Tokenize OK" in core_log
    assert f"[{rid}]" in bridge_log and "POST /tokenize 200" in bridge_log


def test_admin_keys_guard_model_administration_end_to_end(tmp_path: Path, models_dir: Path) -> None:
    (tmp_path / "clients").write_text("client-key\n")
    (tmp_path / "admins").write_text("admin-key\n")
    keys = [
        "--api-key-file",
        str(tmp_path / "clients"),
        "--admin-key-file",
        str(tmp_path / "admins"),
    ]
    stack = start_stack(tmp_path / "logs", models_dir, keys, keys, None)
    try:
        unload = json.dumps({"model": MODEL, "prompt": "", "keep_alive": 0, "stream": False})
        unload_body = unload.encode()

        def as_(key: str, path: str, body: bytes) -> int:
            return stack.http("POST", path, body, {"Authorization": f"Bearer {key}"}).status

        generate = json.dumps(
            {"model": MODEL, "prompt": "Hi", "options": {"num_predict": 1}, "stream": False}
        )
        assert as_("client-key", "/api/generate", generate.encode()) == 200
        assert as_("client-key", "/api/generate", unload_body) == 403
        assert as_("admin-key", "/api/generate", unload_body) == 200
        assert as_("nobody", "/api/generate", unload_body) == 401
    finally:
        stack.stop()
