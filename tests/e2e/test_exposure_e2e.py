"""Safe to expose, end to end: both processes refuse to start open off loopback, admin keys guard
model administration, request ids travel through both processes' logs, TLS on both hops, and
SIGTERM on the bridge drains."""

from __future__ import annotations

import http.client
import json
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL, Stack, start_stack
from tests.pki import make_pki

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
        for option in ({"num_ctx": 1024}, {"num_thread": 1}):  # they change it for everyone
            body = json.dumps({"model": MODEL, "prompt": "Hi", "options": option, "stream": False})
            assert as_("client-key", "/api/generate", body.encode()) == 403
        sized = {"model": MODEL, "prompt": "", "options": {"num_ctx": 2048}, "stream": False}
        assert as_("admin-key", "/api/generate", json.dumps(sized).encode()) == 200
    finally:
        stack.stop()


def test_tls_on_both_hops_with_the_openai_sdk(tmp_path: Path, models_dir: Path) -> None:
    """HTTPS to the bridge, mutual TLS from the bridge to the core."""
    pki = make_pki(tmp_path / "pki")
    core_args = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    core_args += ["--tls-client-ca", str(pki.ca)]
    bridge_args = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    bridge_args += ["--core-tls-ca", str(pki.ca), "--core-tls-cert", str(pki.client_cert)]
    bridge_args += ["--core-tls-key", str(pki.client_key)]
    stack = start_stack(tmp_path / "logs", models_dir, core_args, bridge_args, None)
    try:
        base = f"https://127.0.0.1:{stack.bridge.port}"
        with httpx.Client(verify=ssl.create_default_context(cafile=str(pki.ca))) as http:
            client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", http_client=http)
            reply = client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Say hi"}],
                max_tokens=4,
                temperature=0,
            )
            assert reply.usage is not None and reply.usage.completion_tokens >= 1
            assert http.get(f"{base}/health").json()["status"] == "ok"
        # Plain HTTP to the TLS port, and a client that does not trust the CA, are refused.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{stack.bridge.port}/health", timeout=5)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/health", timeout=5)
    finally:
        stack.stop()


def test_sigterm_on_the_bridge_drains_streams_and_refuses_new_requests(
    tmp_path: Path, models_dir: Path
) -> None:
    stack = start_stack(tmp_path / "logs", models_dir, [], ["--shutdown-grace", "30"], None)
    bridge = stack.bridge
    assert bridge.process is not None
    connection = http.client.HTTPConnection("127.0.0.1", bridge.port, timeout=60)
    try:
        body = json.dumps(
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "Tell me a long story."}],
                "stream": True,
                "max_tokens": 120,
                "temperature": 0,
            }
        )
        connection.request(
            "POST", "/v1/chat/completions", body, {"Content-Type": "application/json"}
        )
        stream = connection.getresponse()
        assert stream.status == 200
        first = stream.readline()
        assert first.startswith(b"data: ")
        bridge.process.send_signal(signal.SIGTERM)
        refused = None
        deadline = time.monotonic() + 10
        while refused is None and time.monotonic() < deadline:
            late = stack.http("GET", "/v1/models")
            refused = late if late.status == 503 else None
        assert refused is not None and refused.headers.get("Retry-After") == "1"
        assert refused.json["error"]["code"] == "shutting_down"
        rest = stream.read()  # the stream in flight goes on to its end
        assert rest.rstrip().endswith(b"data: [DONE]")
        assert bridge.process.wait(timeout=30) == 0
    finally:
        connection.close()
        stack.stop()
