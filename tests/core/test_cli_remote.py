"""`minerva models` and `minerva load` against a real in-process core (API keys and TLS on)."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from core.cli import __main__ as cli
from core.server import CoreServer, start
from tests.conftest import DEFAULT_MODEL_ID, DEFAULT_MODEL_PATH
from tests.core.conftest import CORRUPT_ID, core_settings, make_models_dir
from tests.pki import Pki, make_pki

pytestmark = pytest.mark.asyncio(loop_scope="session")

KEY = "cli-test-key"


@dataclass
class Cores:
    keyed: CoreServer
    tls: CoreServer
    pki: Pki


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def cores(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cores]:
    """Two cores of their own, so `load` starts from an unloaded model: one wanting an API key,
    one serving mutual TLS."""
    root = tmp_path_factory.mktemp("cli")
    models_dir = make_models_dir(root / "models", DEFAULT_MODEL_PATH)
    keyed = await start(core_settings(models_dir, api_keys=(KEY,)))
    pki = make_pki(root / "pki")
    tls = await start(
        core_settings(
            models_dir, tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.ca
        )
    )
    yield Cores(keyed, tls, pki)
    await keyed.stop(0)
    await tls.stop(0)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def _run(
    argv: list[str], env: dict[str, str], out: io.StringIO | None = None
) -> tuple[int, str, str]:
    args, _ = cli.parse_args(argv)
    out = out if out is not None else io.StringIO()
    err = io.StringIO()
    code = await cli.run_remote(args, env, out, err)
    return code, out.getvalue(), err.getvalue()


def _target(core: CoreServer) -> list[str]:
    return ["--core", f"127.0.0.1:{core.port}"]


async def test_models_compact_is_the_cores_own_listing(cores: Cores) -> None:
    code, out, err = await _run(
        ["models", "--compact", *_target(cores.keyed)], {"MINERVA_API_KEYS": KEY}
    )
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "MODEL|QUANT|SIZE_MB|TENSORS|LAYERS|VOCAB"
    assert f"{CORRUPT_ID}|||||" in lines
    (smol,) = (line for line in lines if line.startswith(f"{DEFAULT_MODEL_ID}|"))
    assert smol == f"{DEFAULT_MODEL_ID}|Q4_1|98.4|272|30|49152"


async def test_models_table(cores: Cores) -> None:
    code, out, _ = await _run(["models", *_target(cores.keyed)], {"MINERVA_CORE_API_KEY": KEY})
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows[DEFAULT_MODEL_ID][1:4] == ["gguf", "Q4_1", "98.4"]
    assert rows[CORRUPT_ID][1:] == ["error"]
    assert f"{CORRUPT_ID}:" in rows  # the error line under the table


async def test_a_missing_or_wrong_key_is_refused(cores: Cores) -> None:
    for env in ({}, {"MINERVA_API_KEYS": "wrong"}):
        code, out, err = await _run(["models", *_target(cores.keyed)], env)
        assert (code, out) == (1, "")
        assert err.startswith("minerva: UNAUTHENTICATED: ")


async def test_load_streams_progress_then_ready(cores: Cores, tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"{KEY}\n")
    argv = ["load", DEFAULT_MODEL_ID, *_target(cores.keyed), "--core-api-key-file", str(key_file)]
    code, out, err = await _run(argv, {})
    assert (code, err) == (0, "")
    *progress, ready = out.splitlines()
    bar = "loading weights  [{}] {:>3}%"
    assert progress == [
        "queued: waiting for memory",
        *(bar.format("#" * n + "." * (30 - n), p) for n, p in ((7, 25), (15, 50), (22, 75))),
        bar.format("#" * 30, 100),
        "creating context: allocating the KV cache",
    ]
    assert re.fullmatch(
        rf"loaded {DEFAULT_MODEL_ID}: \d+\.\d MB in memory, context 2048, 8 slots", ready
    )
    assert "\r" not in out  # not a terminal: plain lines
    # Loaded now: a second load is a single READY message.
    code, out, _ = await _run(argv, {}, Terminal())
    assert code == 0
    assert out.startswith(f"loaded {DEFAULT_MODEL_ID}: ")
    code, out, _ = await _run(["models", *_target(cores.keyed)], {"MINERVA_API_KEYS": KEY})
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows[DEFAULT_MODEL_ID][-1] == "loaded"


async def test_load_an_unknown_or_broken_model(cores: Cores) -> None:
    env = {"MINERVA_API_KEYS": KEY}
    code, out, err = await _run(["load", "nope", *_target(cores.keyed)], env)
    assert (code, out) == (1, "")
    assert err == "minerva: NOT_FOUND: model 'nope' not found\n"
    code, _, err = await _run(["load", CORRUPT_ID, *_target(cores.keyed)], env)
    assert code == 1
    assert err.startswith("minerva: FAILED_PRECONDITION: ")


async def test_models_over_mutual_tls(cores: Cores) -> None:
    pki = cores.pki
    tls = ["--core", f"localhost:{cores.tls.port}", "--core-tls-ca", str(pki.ca)]
    client_cert = ["--core-tls-cert", str(pki.client_cert), "--core-tls-key", str(pki.client_key)]
    code, out, _ = await _run(["models", "--compact", *tls, *client_cert], {})
    assert code == 0
    assert f"{DEFAULT_MODEL_ID}|Q4_1|" in out
    code, out, err = await _run(["models", *tls], {})  # no client certificate
    assert (code, out) == (1, "")
    assert err.startswith("minerva: UNAVAILABLE: ")
