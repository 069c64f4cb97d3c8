"""Real core and bridge processes on free loopback ports, and OpenAI SDK clients pointed at them."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import DEFAULT_MODEL_ID, DEFAULT_MODEL_PATH, ROOT

API_KEY = "e2e-key"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
MODEL = DEFAULT_MODEL_ID


@dataclass
class ServerProcess:
    """One child process (core or bridge) whose stderr goes to a log file we can read back."""

    name: str
    args: list[str]
    log_path: Path
    ready_pattern: str
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    _log_offset: int = 0

    def start(self) -> None:
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.name, *self.args],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.port = int(self.wait_for_log(self.ready_pattern, START_TIMEOUT_S).group(1))

    def restart(self) -> None:
        """Starts again on the port it had (a restarted core keeps its address)."""
        self.stop()
        self.args = [f"127.0.0.1:{self.port}" if a == "127.0.0.1:0" else a for a in self.args]
        self.start()

    def log_text(self, since: int = 0) -> str:
        return self.log_path.read_bytes()[since:].decode(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def wait_for_log(self, pattern: str, timeout: float, since: int | None = None) -> re.Match[str]:
        """Polls the log for `pattern` written after `since` (default: this start)."""
        offset = self._log_offset if since is None else since
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.log_text(offset))
            if found:
                return found
            if self.process is not None and self.process.poll() is not None:
                pytest.fail(f"{self.name} exited ({self.process.returncode}):\n{self.log_text()}")
            time.sleep(0.05)
        pytest.fail(f"{self.name}: no {pattern!r} within {timeout}s:\n{self.log_text()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def core_process(log_dir: Path, models_dir: Path, *extra: str, port: int = 0) -> ServerProcess:
    return ServerProcess(
        name="core",
        args=[
            "--models-dir",
            str(models_dir),
            # models_dir links the real models in: they resolve under the repository's models/.
            "--allowed-root",
            str(DEFAULT_MODEL_PATH.parent),
            "--listen",
            f"127.0.0.1:{port}",
            *extra,
        ],
        log_path=log_dir / "core.log",
        ready_pattern=r"minerva core listening on 127\.0\.0\.1:(\d+)",
    )


def bridge_process(log_dir: Path, core_port: int, *extra: str) -> ServerProcess:
    return ServerProcess(
        name="rest_bridge",
        args=["--listen", "127.0.0.1:0", "--core", f"127.0.0.1:{core_port}", *extra],
        log_path=log_dir / "bridge.log",
        ready_pattern=r"minerva bridge listening on 127\.0\.0\.1:(\d+)",
    )


@dataclass(frozen=True)
class RawResponse:
    status: int
    json: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Stack:
    """A core and a bridge in front of it."""

    core: ServerProcess
    bridge: ServerProcess
    api_key: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.bridge.port}/v1"

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.base_url, api_key=self.api_key or "unused", max_retries=0, timeout=60
        )

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self.api_key or "unused", max_retries=0, timeout=60
        )

    def http(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> RawResponse:
        """A plain HTTP request (with the key), for what the SDK hides: status and raw JSON."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.bridge.port}{path}",
            data=body,
            method=method,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return RawResponse(
                    response.status, json.loads(response.read()), dict(response.headers)
                )
        except urllib.error.HTTPError as error:
            return RawResponse(error.code, json.loads(error.read()), dict(error.headers))

    def stop(self) -> None:
        self.bridge.stop()
        self.core.stop()


def start_stack(
    log_dir: Path,
    models_dir: Path,
    core_args: list[str],
    bridge_args: list[str],
    api_key: str | None,
) -> Stack:
    log_dir.mkdir(parents=True, exist_ok=True)
    core = core_process(log_dir, models_dir, *core_args)
    core.start()
    bridge = bridge_process(log_dir, core.port, *bridge_args)
    try:
        bridge.start()
    except BaseException:
        core.stop()
        raise
    return Stack(core=core, bridge=bridge, api_key=api_key)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory, default_model_path: Path) -> Path:
    """Only the default model, so tests don't depend on what else is in models/."""
    directory = tmp_path_factory.mktemp("models")
    (directory / default_model_path.name).symlink_to(default_model_path)
    return directory


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Stack]:
    """The shared stack: API key on both sides, a 1 MiB body limit for the 413 test."""
    log_dir = tmp_path_factory.mktemp("stack")
    key_file = log_dir / "keys"
    key_file.write_text(f"{API_KEY}\n")
    started = start_stack(
        log_dir,
        models_dir,
        core_args=["--api-key-file", str(key_file)],
        bridge_args=["--api-key-file", str(key_file), "--max-body-mb", "1"],
        api_key=API_KEY,
    )
    yield started
    started.stop()


@pytest.fixture(scope="session")
def client(stack: Stack) -> openai.OpenAI:
    return stack.client()


@pytest.fixture(scope="module")
def own_client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> Iterator[openai.OpenAI]:
    """A stack of the test module's own, so its requests leave nothing cached for the shared one
    (the core keeps every conversation's prefix: later answers could depend on earlier tests)."""
    label = request.module.__name__.rsplit(".", 1)[-1]
    own = start_stack(tmp_path_factory.mktemp(label), models_dir, [], [], None)
    yield own.client()
    own.stop()


MakeStack = Callable[..., Stack]


@pytest.fixture
def make_stack(tmp_path: Path, models_dir: Path) -> Iterator[MakeStack]:
    """A private stack for tests that break or saturate their core; stopped after the test."""
    made: list[Stack] = []

    def make(core_args: tuple[str, ...] = ()) -> Stack:
        made.append(
            start_stack(tmp_path / f"stack{len(made)}", models_dir, list(core_args), [], None)
        )
        return made[-1]

    yield make
    for item in made:
        item.stop()
