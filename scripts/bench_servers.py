"""Servers the benchmarks start and stop: Minerva's core and bridge, llama.cpp's llama-server."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LLAMA_SERVER_SH = ROOT.parent / "shared" / "tools" / "llama-server.sh"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0


class Server:
    """A child process whose output goes to a log file; ready once its log or a URL says so."""

    def __init__(self, name: str, command: list[str], log_dir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env
            )

    def wait_for_log(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log_path.read_text(errors="replace"))
            if found:
                return found
            self._check_alive()
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start; see {self.log_path}")

    def wait_for_http(self, url: str) -> None:
        """Until GET `url` answers 200 (llama-server's /health says 503 while loading)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            self._check_alive()
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not become healthy; see {self.log_path}")

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{tail}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass(frozen=True)
class ServeConfig:
    """What every server gets alike: the model, CPU threads, slots and per-sequence context."""

    model: Path
    threads: int
    slots: int
    context: int
    log_dir: Path


@dataclass(frozen=True)
class MinervaPorts:
    core: int
    bridge: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def model_id(model: Path) -> str:
    return model.stem.lower()


def clean_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MINERVA_API_KEYS", None)  # loopback benchmark: no keys on either hop
    return env


# --- Minerva ------------------------------------------------------------------------------------


def core_has_flag(flag: str) -> bool:
    """Whether `python -m core --help` lists `flag`, so one script serves old and new cores."""
    result = subprocess.run(
        [sys.executable, "-m", "core", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    return flag in result.stdout


def core_command(config: ServeConfig, models_dir: Path) -> list[str]:
    command = [sys.executable, "-m", "core", "--models-dir", str(models_dir)]
    if core_has_flag("--allowed-root"):  # the models dir links to the model file elsewhere
        command += ["--allowed-root", str(config.model.resolve().parent)]
    command += ["--listen", "127.0.0.1:0", "--threads", str(config.threads)]
    command += ["--context-size", str(config.context)]
    if core_has_flag("--slots"):
        command += ["--slots", str(config.slots)]
    return command


@contextmanager
def minerva(config: ServeConfig) -> Iterator[MinervaPorts]:
    """The core (serving only the benchmark's model) and a bridge in front of it."""
    models_dir = config.log_dir / "models"
    models_dir.mkdir(exist_ok=True)
    link = models_dir / config.model.name
    if not link.exists():
        link.symlink_to(config.model.resolve())
    env = clean_env()
    servers: list[Server] = []
    try:
        servers.append(Server("core", core_command(config, models_dir), config.log_dir, env))
        core = int(servers[0].wait_for_log(r"minerva core listening on [\d.]+:(\d+)").group(1))
        bridge_command = [sys.executable, "-m", "rest_bridge", "--listen", "127.0.0.1:0"]
        bridge_command += ["--core", f"127.0.0.1:{core}"]
        servers.append(Server("bridge", bridge_command, config.log_dir, env))
        bridge = int(servers[1].wait_for_log(r"minerva bridge listening on [\d.]+:(\d+)").group(1))
        yield MinervaPorts(core, bridge)
    finally:
        for server in reversed(servers):
            server.stop()


# --- llama-server -------------------------------------------------------------------------------


def build_llama_server() -> Path:
    """The llama-server binary, built once per machine by the shared tool (minutes the first time)."""
    result = subprocess.run(
        ["bash", str(LLAMA_SERVER_SH)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{LLAMA_SERVER_SH} failed with exit code {result.returncode}")
    binary = Path(lines[-1]) / "llama-server"
    if not os.access(binary, os.X_OK):
        raise RuntimeError(f"{LLAMA_SERVER_SH} printed {lines[-1]}, which has no llama-server")
    return binary


def llama_server_command(binary: Path, config: ServeConfig, port: int) -> list[str]:
    # Explicit -np turns the unified KV cache off, so -c is split evenly over the slots.
    command = [str(binary), "-m", str(config.model), "--alias", model_id(config.model)]
    command += ["-t", str(config.threads), "-tb", str(config.threads)]
    command += ["-np", str(config.slots), "-c", str(config.context * config.slots)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-webui"]
    return command


@contextmanager
def llama_server(binary: Path, config: ServeConfig) -> Iterator[int]:
    """llama-server on a free loopback port, healthy (model loaded); yields the port."""
    port = free_port()
    server = Server(
        "llama-server", llama_server_command(binary, config, port), config.log_dir, clean_env()
    )
    try:
        server.wait_for_http(f"http://127.0.0.1:{port}/health")
        yield port
    finally:
        server.stop()
