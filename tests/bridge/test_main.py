"""`python -m rest_bridge`: flags and environment into Settings, and the process lifecycle."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from rest_bridge.__main__ import build_settings, parse_args
from rest_bridge.settings import Settings, parse_host_port

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


def settings_for(argv: list[str], env: dict[str, str] | None = None) -> Settings:
    return build_settings(parse_args(argv), env or {})


def test_defaults() -> None:
    settings = settings_for([])
    assert (settings.host, settings.port, settings.core_address) == (
        "127.0.0.1",
        8000,
        "127.0.0.1:50051",
    )
    assert settings.api_keys == ()
    assert settings.core_api_key is None
    assert settings.max_body_bytes == 16 * 1024 * 1024


def test_keys_from_flags_and_environment() -> None:
    settings = settings_for(["--api-key", "a", "--api-key", "b"], {"MINERVA_API_KEYS": " c, a ,,d"})
    assert settings.api_keys == ("a", "b", "c", "d")
    assert settings.core_api_key == "a"


@pytest.mark.parametrize(
    ("argv", "env", "core_key"),
    [
        (["--core-api-key", "flag"], {"MINERVA_CORE_API_KEY": "env"}, "flag"),
        ([], {"MINERVA_CORE_API_KEY": "env", "MINERVA_API_KEYS": "x"}, "env"),
        ([], {"MINERVA_API_KEYS": "x,y"}, "x"),
    ],
)
def test_core_key_precedence(argv: list[str], env: dict[str, str], core_key: str) -> None:
    assert settings_for(argv, env).core_api_key == core_key


def test_keys_stay_out_of_the_settings_repr() -> None:
    settings = settings_for(["--api-key", "top-secret", "--core-api-key", "core-secret"])
    assert "secret" not in repr(settings)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("[::1]:9", ("::1", 9)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_parse_host_port(value: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(value) == expected


@pytest.mark.parametrize("value", ["8000", ":8000", "host:", "host:http", "host:70000"])
def test_parse_host_port_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_host_port(value)


def test_process_starts_reports_core_down_and_stops_on_sigterm(tmp_path: Path) -> None:
    log_path = tmp_path / "bridge.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rest_bridge",
                "--listen",
                "127.0.0.1:0",
                "--core",
                "127.0.0.1:1",
                "--api-key",
                "process-secret",
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        port = _wait_for_port(log_path, process)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10)
        assert caught.value.code == 503
        assert json.loads(caught.value.read())["message"] == "core unavailable at 127.0.0.1:1"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log_path.read_text()
    assert "minerva bridge stopping" in text
    assert "process-secret" not in text


def _wait_for_port(log_path: Path, process: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        found = re.search(r"minerva bridge listening on 127\.0\.0\.1:(\d+)", log_path.read_text())
        if found:
            return int(found.group(1))
        if process.poll() is not None:
            pytest.fail(f"bridge exited early:\n{log_path.read_text()}")
        time.sleep(0.05)
    pytest.fail(f"bridge did not report listening:\n{log_path.read_text()}")
