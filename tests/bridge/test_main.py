"""`python -m rest_bridge`: flags and environment into Settings, and the process lifecycle."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from minerva.v1.exposure import ExposureError

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


@pytest.mark.parametrize(
    "core", ["10.0.0.1:50051,10.0.0.2:50051", "dns:///minerva-core-headless:50051"]
)
def test_core_takes_a_list_or_a_grpc_target(core: str) -> None:
    assert settings_for(["--core", core]).core_address == core


@pytest.mark.parametrize("core", ["10.0.0.1:50051,10.0.0.2", ",", "core"])
def test_a_malformed_core_list_stops_the_bridge(core: str) -> None:
    with pytest.raises(ValueError, match=r"HOST:PORT|names no core"):
        settings_for(["--core", core])


@pytest.mark.parametrize(("argv", "seconds"), [([], 300.0), (["1h"], 3600.0), (["-1"], -1.0)])
def test_ollama_keep_alive_default(argv: list[str], seconds: float) -> None:
    flags = ["--ollama-keep-alive", *argv] if argv else []
    assert settings_for(flags).ollama_keep_alive_s == seconds


def test_a_bad_ollama_keep_alive_stops_the_bridge(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--ollama-keep-alive", "5 minutes"])
    assert "--ollama-keep-alive" in capsys.readouterr().err


def _key_file(tmp_path: Path, name: str, *lines: str) -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_keys_from_files_and_environment(tmp_path: Path) -> None:
    keys = _key_file(tmp_path, "keys", "# clients", "a", "", "b")
    more = _key_file(tmp_path, "more", "b", "e")
    settings = settings_for(
        ["--api-key-file", keys, "--api-key-file", more], {"MINERVA_API_KEYS": " c, a ,,d"}
    )
    assert settings.api_keys == ("a", "b", "e", "c", "d")
    assert settings.core_api_key == "a"


def test_keys_are_not_taken_on_the_command_line() -> None:
    # They would show in `ps` to every user of the machine.
    with pytest.raises(SystemExit):
        settings_for(["--api-key", "visible-to-ps"])


@pytest.mark.parametrize(
    ("argv", "env", "core_key"),
    [
        (["--core-api-key-file", "FILE"], {"MINERVA_CORE_API_KEY": "env"}, "from-file"),
        ([], {"MINERVA_CORE_API_KEY": "env", "MINERVA_API_KEYS": "x"}, "env"),
        ([], {"MINERVA_API_KEYS": "x,y"}, "x"),
    ],
)
def test_core_key_precedence(
    tmp_path: Path, argv: list[str], env: dict[str, str], core_key: str
) -> None:
    argv = [_key_file(tmp_path, "core", "from-file") if a == "FILE" else a for a in argv]
    assert settings_for(argv, env).core_api_key == core_key


def test_keys_stay_out_of_the_settings_repr(tmp_path: Path) -> None:
    settings = settings_for(
        ["--api-key-file", _key_file(tmp_path, "k", "top-secret")],
        {"MINERVA_CORE_API_KEY": "core-secret"},
    )
    assert "secret" not in repr(settings)


@pytest.mark.parametrize(
    ("argv", "env", "refused"),
    [
        (["--listen", "0.0.0.0:8000"], {}, "on 0.0.0.0 without API keys"),
        (["--listen", "[::]:8000"], {}, "on :: without API keys"),
        (["--listen", "bridge.internal:8000"], {}, "on bridge.internal without API keys"),
        (["--ollama-listen", "10.0.0.5:11434"], {}, "on 10.0.0.5 without API keys"),
        (["--listen", "0.0.0.0:8000"], {"MINERVA_API_KEYS": "k"}, None),
        (["--listen", "0.0.0.0:8000", "--allow-unauthenticated"], {}, None),
        (["--listen", "localhost:8000", "--ollama-listen", "[::1]:11434"], {}, None),
        (["--listen", "127.0.0.2:8000"], {}, None),
    ],
)
def test_deny_by_default_off_loopback(
    argv: list[str], env: dict[str, str], refused: str | None
) -> None:
    if refused is None:
        settings_for(argv, env)
        return
    with pytest.raises(ExposureError, match=re.escape(refused)):
        settings_for(argv, env)


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
            ],
            cwd=ROOT,
            env={**os.environ, "MINERVA_API_KEYS": "process-secret"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        port = _wait_for_port(log_path, process)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10)
        assert caught.value.code == 503
        # An unauthenticated probe learns nothing of the deployment, such as the core's address.
        assert json.loads(caught.value.read())["message"] == "core unavailable"
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


@pytest.mark.parametrize(
    ("argv", "refused"),
    [
        (["--tls-cert", "CERT"], "give both the certificate and its private key"),
        (["--core-tls-cert", "CERT", "--core-tls-key", "CERT"], "needs --core-tls-ca"),
        (["--tls-cert", "MISSING", "--tls-key", "CERT"], "cannot read the TLS certificate"),
        (["--core-tls-ca", "NOT_PEM"], "is not PEM"),
    ],
)
def test_tls_settings_are_checked_before_serving(
    tmp_path: Path, argv: list[str], refused: str
) -> None:
    files = {
        "CERT": _key_file(tmp_path, "cert.pem", "-----BEGIN CERTIFICATE-----"),
        "MISSING": str(tmp_path / "missing.pem"),
        "NOT_PEM": _key_file(tmp_path, "junk", "junk"),
    }
    with pytest.raises(ExposureError, match=re.escape(refused)):
        settings_for([files.get(a, a) for a in argv])
