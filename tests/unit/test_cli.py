"""The `minerva` command without a server: argument parsing, client settings, output formats,
`check` on valid and malformed model files, and the console scripts' entry points."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from minerva.v1 import models_pb2
from minerva.v1.exposure import ExposureError

from core.cli import __main__ as cli
from core.cli.check import NOT_A_MODEL, check_paths
from core.cli.connection import client_settings
from core.cli.load import ProgressView, render_bar
from core.cli.models import TABLE_COLUMNS, format_table
from core.cli.serve import commands
from rest_bridge.settings import Settings
from tests.conftest import ROOT
from tests.unit.conftest import TINY_TOKENS, write_tiny_gguf

SCRIPTS = {
    "minerva": "core.cli.__main__:main",
    "minerva-core": "core.__main__:main",
    "minerva-bridge": "rest_bridge.__main__:main",
}
STAGE = models_pb2.LoadStage


# --- parsing ------------------------------------------------------------------------------


def test_models_flags_are_the_bridges_core_flags(tmp_path: Path) -> None:
    args, extra = cli.parse_args(
        ["models", "--compact", "--core", "dns:///cores:50051", "--core-tls-ca", "ca.pem"]
    )
    assert (args.command, args.compact, args.core, extra) == (
        "models",
        True,
        "dns:///cores:50051",
        [],
    )
    assert args.core_tls_ca == Path("ca.pem")
    assert cli.parse_args(["models"])[0].core == "127.0.0.1:50051"


def test_serve_passes_unknown_flags_to_the_core_only() -> None:
    args, extra = cli.parse_args(["serve", "--models-dir", "m", "--threads", "1"])
    assert extra == ["--threads", "1"]
    core, bridge = commands(args, extra)
    assert core[1:] == [
        "-m",
        "core",
        "--models-dir",
        "m",
        "--listen",
        "127.0.0.1:50051",
        "--threads",
        "1",
    ]
    assert bridge[1:] == [
        "-m",
        "rest_bridge",
        "--listen",
        "127.0.0.1:8000",
        "--core",
        "127.0.0.1:50051",
    ]
    args, extra = cli.parse_args(["serve", "--core-only", "--core", "127.0.0.1:6000"])
    assert [c[-1] for c in commands(args, extra)] == ["127.0.0.1:6000"]


@pytest.mark.parametrize(
    "argv",
    [
        [],  # a command is required
        ["models", "--threads", "1"],  # extra flags belong to serve alone
        ["models", "--core-api-key", "k"],  # no abbreviation of --core-api-key-file
        ["check"],  # at least one path
        ["load"],  # a model id
        ["launch"],
    ],
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(argv)
    assert exc.value.code == 2
    assert "usage: minerva" in capsys.readouterr().err


# --- keys and TLS for the core, as the bridge reads them -----------------------------------


def _settings(argv: list[str], env: dict[str, str]) -> Settings:
    return client_settings(cli.parse_args(["models", *argv])[0], env)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"MINERVA_API_KEYS": "a, b"}, "a"),
        ({"MINERVA_API_KEYS": "a", "MINERVA_CORE_API_KEY": "c"}, "c"),
        ({"MINERVA_CORE_API_KEY": "c", "MINERVA_ADMIN_KEYS": "x,y"}, "x"),
        ({"MINERVA_ADMIN_KEYS": "x", "MINERVA_CORE_ADMIN_KEY": "z"}, "z"),
    ],
)
def test_the_key_sent_to_the_core(env: dict[str, str], expected: str | None) -> None:
    assert _settings([], env).core_api_key == expected


def test_key_files_win_over_the_environment(tmp_path: Path) -> None:
    (tmp_path / "client").write_text("# comment\nfile-key\n")
    (tmp_path / "admin").write_text("admin-key\n")
    env = {"MINERVA_CORE_API_KEY": "env-key"}
    client = _settings(["--core-api-key-file", str(tmp_path / "client")], env)
    assert client.core_api_key == "file-key"
    admin = _settings(["--core-admin-key-file", str(tmp_path / "admin")], env)
    assert admin.core_api_key == "admin-key"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--core-api-key-file", "/nonexistent/keys"], "cannot read key file"),
        (["--core-tls-cert", "c.pem"], "give both the certificate and its private key"),
        (["--core-tls-cert", "c.pem", "--core-tls-key", "k.pem"], "needs --core-tls-ca"),
    ],
)
def test_unusable_key_or_tls_flags(argv: list[str], message: str) -> None:
    with pytest.raises(ExposureError, match=message):
        _settings(argv, {})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--core-api-key-file", "/nonexistent/keys"], "cannot read key file /nonexistent/keys"),
        (["--core-tls-ca", "/nonexistent/ca.pem"], "cannot read the core TLS CA /nonexistent"),
    ],
)
async def test_unusable_flags_exit_2_before_any_call(argv: list[str], message: str) -> None:
    args, _ = cli.parse_args(["load", "smol", *argv])
    out, err = io.StringIO(), io.StringIO()
    assert await cli.run_remote(args, {}, out, err) == 2
    assert out.getvalue() == ""
    assert err.getvalue().startswith(f"minerva: {message}")


# --- output formats ------------------------------------------------------------------------


def test_models_table() -> None:
    meta = models_pb2.ModelMetadata(
        format=models_pb2.MODEL_FORMAT_GGUF, quantization="Q4_1", file_size_bytes=98_362_432
    )
    models = [
        models_pb2.Model(
            id="smol", metadata=meta, context_size=2048, load_state=models_pb2.LOAD_STATE_LOADED
        ),
        models_pb2.Model(id="broken", error="invalid GGUF file: bad magic"),
    ]
    lines = format_table(models).splitlines()
    assert lines[0].split() == list(TABLE_COLUMNS)
    assert lines[1].split() == ["smol", "gguf", "Q4_1", "98.4", "2048", "loaded"]
    assert lines[2].split() == ["broken", "error"]
    assert lines[3] == "broken: invalid GGUF file: bad magic"
    # Columns line up: the row's cells start where the header's do.
    assert lines[1].index("gguf") == lines[0].index("FORMAT")
    assert lines[1].index("loaded") == lines[0].index("STATE")


def test_progress_bar() -> None:
    assert render_bar(STAGE.LOAD_STAGE_LOADING_WEIGHTS, 0.5, width=10) == (
        "loading weights  [#####.....]  50%"
    )
    assert render_bar(STAGE.LOAD_STAGE_CONVERTING, 1.7, width=4) == ("converting       [####] 100%")
    assert render_bar(STAGE.LOAD_STAGE_CREATING_CONTEXT, 0.0) == "creating context"


def _events() -> list[models_pb2.LoadModelResponse]:
    ready = models_pb2.Model(id="smol", memory_bytes=354_000_000, context_size=2048, slots=4)
    return [
        models_pb2.LoadModelResponse(stage=STAGE.LOAD_STAGE_QUEUED, message="waiting"),
        *(
            models_pb2.LoadModelResponse(stage=STAGE.LOAD_STAGE_LOADING_WEIGHTS, progress=p)
            for p in (0.0, 0.1, 0.3, 0.31, 0.8, 1.0)
        ),
        models_pb2.LoadModelResponse(stage=STAGE.LOAD_STAGE_CREATING_CONTEXT),
        models_pb2.LoadModelResponse(stage=STAGE.LOAD_STAGE_READY, model=ready),
    ]


def test_plain_progress_is_a_line_per_stage_and_quarter() -> None:
    view = ProgressView(tty=False)
    text = "".join(view.update(e) for e in _events())
    bar = "loading weights  [{}] {}"
    assert text.splitlines() == [
        "queued: waiting",
        bar.format("#" * 7 + "." * 23, " 25%"),
        bar.format("#" * 22 + "." * 8, " 75%"),
        bar.format("#" * 30, "100%"),
        "creating context",
        "loaded smol: 354.0 MB in memory, context 2048, 4 slots",
    ]
    assert "\r" not in text


def test_tty_progress_redraws_one_line() -> None:
    view = ProgressView(tty=True)
    parts = [view.update(e) for e in _events()]
    assert all(p.startswith("\r") and p.endswith("\x1b[K") for p in parts[:-1])
    assert parts[3] == "\rloading weights  [" + "#" * 9 + "." * 21 + "]  30%\x1b[K"
    assert parts[-1] == "\nloaded smol: 354.0 MB in memory, context 2048, 4 slots\n"


# --- check: header readers, no server ------------------------------------------------------


def test_check_valid_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny = write_tiny_gguf(tmp_path / "tiny.gguf")
    assert cli.main(["check", str(tiny)]) == 0
    line = capsys.readouterr().out.strip()
    size_mb = f"{tiny.stat().st_size / 1e6:.1f}"
    assert line == (
        f"OK    {tiny}  gguf llama Q8_0 {size_mb} MB, tensors 6, layers 2, vocab 10, "
        "context 256, params 664, chat template"
    )


def test_check_reports_each_bad_file_and_exits_1(tmp_path: Path) -> None:
    good = write_tiny_gguf(tmp_path / "good.gguf")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(good.read_bytes()[:100])
    bad_magic = tmp_path / "magic.gguf"
    bad_magic.write_bytes(b"NOPE" + b"\0" * 60)
    pickle = tmp_path / "model.bin"
    pickle.write_bytes(b"\x80\x04")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    paths = [good, truncated, bad_magic, pickle, text, tmp_path / "missing.gguf"]
    lines, code = check_paths(paths)
    assert code == 1
    assert [line.split()[0] for line in lines] == ["OK", "FAIL", "FAIL", "FAIL", "FAIL", "FAIL"]
    assert [line.split()[1] for line in lines] == [str(p) for p in paths]
    assert lines[1].startswith(f"FAIL  {truncated}  invalid GGUF file: ")
    assert (
        lines[2]
        == f"FAIL  {bad_magic}  invalid GGUF file: bad magic b'NOPE' (expected b'GGUF') at byte offset 0"
    )
    assert "pickle checkpoints are not loaded" in lines[3]
    assert lines[4].endswith(NOT_A_MODEL)
    assert lines[5].endswith("no such file or directory")
    # The path is shown once, not repeated by the reader's message.
    assert lines[2].count(str(bad_magic)) == 1


def test_check_fails_a_vocabulary_that_lists_a_token_twice(tmp_path: Path) -> None:
    """llama.cpp would abort loading it: `check` says so before a server tries."""
    twice = write_tiny_gguf(tmp_path / "twice.gguf", tokens=[*TINY_TOKENS, "ab"])
    lines, code = check_paths([twice])
    assert code == 1
    assert lines == [
        f"FAIL  {twice}  its vocabulary lists the token b'ab' twice (ids 6 and 10); "
        "llama.cpp cannot load such a file"
    ]


def test_check_a_safetensors_checkpoint_directory(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    directory = tmp_path / "hf"
    directory.mkdir()
    (directory / "model.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header + b"\0" * 8
    )
    (directory / "config.json").write_text(
        json.dumps({"model_type": "llama", "num_hidden_layers": 1, "vocab_size": 4})
    )
    lines, code = check_paths([directory])
    assert code == 0, lines
    assert lines[0].startswith(f"OK    {directory}  safetensors llama F32")


# --- console scripts -----------------------------------------------------------------------


def test_console_scripts_are_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == SCRIPTS


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_scripts_resolve(name: str) -> None:
    """Installed entry points (`pip install .` or `-e .`) load to the functions named."""
    (point,) = entry_points(group="console_scripts", name=name)
    assert point.value == SCRIPTS[name]
    assert callable(point.load())


def test_the_client_commands_never_import_llama_cpp() -> None:
    """`check`, `models` and `load` need no llama.cpp: the CLI is a gRPC client plus headers."""
    code = "import sys, core.cli.__main__; sys.exit('llama_cpp' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_the_server_does_not_import_the_client() -> None:
    """The CLI borrows the bridge's channel code; the core's server never loads either."""
    code = (
        "import sys, core.__main__; "
        "sys.exit(any(m.startswith(('rest_bridge', 'core.cli', 'aiohttp')) for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_installed_scripts_run(name: str) -> None:
    script = Path(sys.executable).parent / name
    done = subprocess.run(
        [script, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ")


def test_installed_minerva_check(tmp_path: Path) -> None:
    good = write_tiny_gguf(tmp_path / "good.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 20)
    minerva = Path(sys.executable).parent / "minerva"
    done = subprocess.run(
        [minerva, "check", good, bad], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    ok, fail = done.stdout.splitlines()
    assert ok.startswith(f"OK    {good}  gguf llama Q8_0")
    assert fail.startswith(f"FAIL  {bad}  ")
