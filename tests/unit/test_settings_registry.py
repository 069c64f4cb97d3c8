"""TOML config parsing and the registry's rules: ids, allowed roots, scanning, formats."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from core.__main__ import build_settings, parse_args
from core.engine.llama_backend import flash_attn_type
from core.engine.types import FlashAttention
from core.errors import ConfigError, ModelNotFound
from core.metadata.types import ModelFormat
from core.registry import Registry, id_from_path, validate_id
from core.settings import (
    ImportType,
    ModelOptions,
    Settings,
    auto_slots,
    default_kv_cache_tokens,
    import_cache_dir,
    load_config,
)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "minerva.toml"
    path.write_text(text)
    return path


def test_config_file_builds_settings_with_paths_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    cfg = write_config(
        tmp_path,
        """
[server]
listen = "127.0.0.1:6000"
models_dir = "models"
queue_size = 3
idle_ttl_s = 60
allowed_roots = ["models"]

[[models]]
id = "smol"
path = "models/a.gguf"
context_size = 1024
n_gpu_layers = -1
chat_template = "chatml"
pinned = true
""",
    )
    fields = load_config(cfg)
    settings = Settings(**fields)
    assert settings.listen == "127.0.0.1:6000"
    assert settings.models_dir == tmp_path / "models"
    assert settings.queue_size == 3 and settings.idle_ttl_s == 60.0
    assert settings.allowed_roots == (tmp_path / "models",)
    (model,) = settings.models
    assert (model.id, model.path, model.context_size, model.n_gpu_layers, model.pinned) == (
        "smol",
        tmp_path / "models/a.gguf",
        1024,
        -1,
        True,
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[server]\nqueue_size = 'many'\n", "queue_size"),
        ("[server]\nbogus = 1\n", "unknown key"),
        ("[[models]]\npath = 'x.gguf'\n", "lacks `id`"),
        ("[server]\npinned = true\n", "unknown key"),
        ("not toml at all [", "cannot read config"),
        ("[server]\nallowed_roots = 'models'\n", "allowed_roots"),
        (
            "[server]\nimport_type = 'q4_0'\n",
            "`import_type` in [server]: 'q4_0'; accepted: f16, q8_0",
        ),
        (
            "[[models]]\nid = 'x'\npath = 'x'\nimport_type = 'bf16'\n",
            "`import_type` of model 'x': 'bf16'; accepted: f16, q8_0",
        ),
        (
            "[server]\nflash_attn = 'yes'\n",
            "`flash_attn` in [server]: 'yes'; accepted: auto, on, off",
        ),
        (
            "[[models]]\nid = 'x'\npath = 'x'\nflash_attn = 'true'\n",
            "`flash_attn` of model 'x': 'true'; accepted: auto, on, off",
        ),
        ("[server]\nflash_attn = true\n", "`flash_attn` must be str"),
    ],
)
def test_bad_config_is_a_config_error(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        load_config(write_config(tmp_path, text))
    assert fragment in err.value.message


def test_import_settings_from_toml_reach_the_spec(tmp_path: Path) -> None:
    (tmp_path / "models" / "hf").mkdir(parents=True)
    (tmp_path / "models" / "hf" / "model.safetensors").write_bytes(b"")
    text = (
        "[server]\nmodels_dir = 'models'\nimport_cache_dir = 'conv'\nimport_type = 'q8_0'\n"
        "[[models]]\nid = 'hf16'\npath = 'models/hf'\nimport_type = 'f16'\n"
    )
    settings = Settings(**load_config(write_config(tmp_path, text)))
    assert settings.import_cache_dir == tmp_path / "conv"
    assert import_cache_dir(settings) == tmp_path / "conv"
    registry = Registry(settings)
    assert registry.get("hf16").import_type is ImportType.F16
    assert registry.get("hf").import_type is ImportType.Q8_0  # scanned: the server default
    default = Settings(models_dir=tmp_path / "models")
    assert import_cache_dir(default) == tmp_path / "models" / ".cache" / "gguf"


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", ".hidden", "x" * 129, "sp ace", "a\\b"])
def test_ids_with_path_characters_are_rejected(bad: str) -> None:
    with pytest.raises(ConfigError):
        validate_id(bad)


def test_scanned_ids_are_lower_cased_safe_stems(tmp_path: Path) -> None:
    assert (
        id_from_path(tmp_path / "SmolLM2-135M Instruct.Q4_1.gguf") == "smollm2-135m-instruct.q4_1"
    )


def test_configured_path_must_resolve_under_allowed_roots(tmp_path: Path) -> None:
    from core.settings import ModelOptions

    inside, outside = tmp_path / "models", tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    (outside / "m.gguf").write_bytes(b"GGUF")
    os.symlink(outside / "m.gguf", inside / "link.gguf")
    escaping = ModelOptions(id="sneaky", path=inside / "link.gguf")
    with pytest.raises(ConfigError, match="outside the allowed roots"):
        Registry(Settings(models=(escaping,), allowed_roots=(inside,)))
    allowed = ModelOptions(id="ok", path=outside / "m.gguf")
    registry = Registry(Settings(models=(allowed,), allowed_roots=(outside,)))
    assert registry.get("ok").format is ModelFormat.GGUF


def test_scan_finds_gguf_safetensors_files_and_sharded_dirs(tmp_path: Path) -> None:
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
    save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(tmp_path / "single.safetensors"))
    sharded = tmp_path / "Sharded-Model"
    sharded.mkdir()
    (sharded / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    (tmp_path / "notes.txt").write_text("not a model")
    registry = Registry(Settings(models_dir=tmp_path))
    formats = {s.id: s.format for s in registry.specs()}
    assert formats == {
        "tiny": ModelFormat.GGUF,
        "single": ModelFormat.SAFETENSORS,
        "sharded-model": ModelFormat.SAFETENSORS,
    }
    with pytest.raises(ModelNotFound):
        registry.get("notes")
    (tmp_path / "late.gguf").write_bytes(b"GGUF")
    registry.rescan()
    assert "late" in {s.id for s in registry.specs()}


BAD_SERVER_VALUES = [
    ("queue_size", -1),
    ("default_context_size", 0),
    ("threads", 0),
    ("memory_budget_mb", 0),
    ("max_message_mb", 0),
    ("shutdown_grace_s", -0.5),
    ("idle_ttl_s", -1.0),
    ("idle_ttl_s", float("nan")),
    ("slots", 0),
    ("slots", 257),
    ("prompt_cache_mb", -1),
]


@pytest.mark.parametrize(("key", "value"), BAD_SERVER_VALUES)
def test_out_of_range_settings_are_config_errors(key: str, value: float) -> None:
    with pytest.raises(ConfigError) as err:
        Settings(**{key: value})  # type: ignore[arg-type]
    assert f"`{key}`" in err.value.message


def test_smallest_valid_settings_are_accepted() -> None:
    settings = Settings(
        queue_size=0,
        default_context_size=1,
        threads=1,
        memory_budget_mb=1,
        max_message_mb=1,
        shutdown_grace_s=0.0,
        idle_ttl_s=0.0,
    )
    assert (settings.queue_size, settings.idle_ttl_s, settings.shutdown_grace_s) == (0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[server]\nqueue_size = -1\n", "`queue_size`"),
        ("[server]\nmax_message_mb = 0\n", "`max_message_mb`"),
        (
            "[[models]]\nid = 'm'\npath = 'm.gguf'\ncontext_size = 0\n",
            "`context_size` of model 'm'",
        ),
        ("[[models]]\nid = 'm'\npath = 'm.gguf'\nthreads = -2\n", "`threads` of model 'm'"),
        ("[[models]]\nid = 'm'\npath = 'm.gguf'\nslots = 0\n", "`slots` of model 'm'"),
        (
            "[[models]]\nid = 'm'\npath = 'm.gguf'\nkv_cache_tokens = 0\n",
            "`kv_cache_tokens` of model 'm'",
        ),
    ],
)
def test_out_of_range_toml_values_are_config_errors(
    tmp_path: Path, text: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as err:
        Settings(**load_config(write_config(tmp_path, text)))
    assert fragment in err.value.message


@pytest.mark.parametrize(
    ("flag", "key"),
    [
        ("--queue-size=-1", "queue_size"),
        ("--context-size=0", "default_context_size"),
        ("--threads=0", "threads"),
        ("--memory-budget-mb=0", "memory_budget_mb"),
        ("--max-message-mb=0", "max_message_mb"),
        ("--shutdown-grace=-1", "shutdown_grace_s"),
        ("--idle-ttl=-1", "idle_ttl_s"),
        ("--slots=0", "slots"),
        ("--prompt-cache-mb=-1", "prompt_cache_mb"),
    ],
)
def test_out_of_range_cli_flags_are_config_errors(tmp_path: Path, flag: str, key: str) -> None:
    args = parse_args(["--models-dir", str(tmp_path), flag])
    with pytest.raises(ConfigError) as err:
        build_settings(args, {})
    assert f"`{key}`" in err.value.message


def test_unknown_configured_format_names_the_model_and_the_choices(tmp_path: Path) -> None:
    from core.settings import ModelOptions

    (tmp_path / "m.bin").write_bytes(b"GGML")
    opts = ModelOptions(id="old-model", path=tmp_path / "m.bin", format="ggml")
    with pytest.raises(ConfigError) as err:
        Registry(Settings(models=(opts,), allowed_roots=(tmp_path,)))
    assert "'old-model'" in err.value.message and "'ggml'" in err.value.message
    assert "'gguf'" in err.value.message and "'safetensors'" in err.value.message


def test_unreadable_entry_is_skipped_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import core.registry

    (tmp_path / "good.gguf").write_bytes(b"GGUF")
    (tmp_path / "locked").mkdir()
    real = core.registry.detect_format

    def detect(path: Path) -> ModelFormat | None:
        # What a chmod 000 directory gives a non-root user when its index file is probed.
        if path.name == "locked":
            raise PermissionError(13, "Permission denied", str(path / "model.safetensors"))
        return real(path)

    monkeypatch.setattr(core.registry, "detect_format", detect)
    with caplog.at_level(logging.WARNING, logger="core.registry"):
        registry = Registry(Settings(models_dir=tmp_path))
    assert [s.id for s in registry.specs()] == ["good"]
    assert any("locked" in r.getMessage() for r in caplog.records)


def test_scanned_names_with_invalid_ids_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("_x.gguf", "a" * 129 + ".gguf", "ok.gguf", "b" * 128 + ".gguf"):
        (tmp_path / name).write_bytes(b"GGUF")
    with caplog.at_level(logging.WARNING, logger="core.registry"):
        registry = Registry(Settings(models_dir=tmp_path))
    assert sorted(s.id for s in registry.specs()) == ["b" * 128, "ok"]
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "'_x'" in warned and repr("a" * 129) in warned
    with pytest.raises(ModelNotFound):
        registry.get("_x")


@pytest.mark.parametrize(
    ("context", "slots", "kv"),
    [
        (2048, 8, 8192),
        (8192, 8, 32768),
        (16384, 4, 65536),
        (65536, 1, 65536),
        (200_000, 1, 200_000),
    ],
)
def test_default_slots_and_kv_pool_follow_the_context(context: int, slots: int, kv: int) -> None:
    assert auto_slots(context) == slots
    assert default_kv_cache_tokens(context, slots) == kv


def test_per_model_slots_and_kv_from_toml(tmp_path: Path) -> None:
    text = "[server]\nslots = 3\n[[models]]\nid = 'm'\npath = 'm.gguf'\nslots = 2\nkv_cache_tokens = 4096\n"
    settings = Settings(**load_config(write_config(tmp_path, text)))
    assert settings.slots == 3
    assert (settings.models[0].slots, settings.models[0].kv_cache_tokens) == (2, 4096)


def test_flash_attention_from_toml_and_the_command_line_reaches_the_spec(tmp_path: Path) -> None:
    (tmp_path / "a.gguf").write_bytes(b"")
    (tmp_path / "b.gguf").write_bytes(b"")
    text = (
        "[server]\nmodels_dir = '.'\nflash_attn = 'on'\n"
        "[[models]]\nid = 'a'\npath = 'a.gguf'\nflash_attn = 'off'\n"
    )
    config = write_config(tmp_path, text)
    registry = Registry(build_settings(parse_args(["--config", str(config)]), {}))
    assert registry.get("a").flash_attn is FlashAttention.OFF  # the model's own wins
    assert registry.get("b").flash_attn is FlashAttention.ON  # scanned: the server's
    args = parse_args(["--config", str(config), "--flash-attn", "auto"])
    settings = build_settings(args, {})
    assert settings.flash_attn is FlashAttention.AUTO
    assert Registry(settings).get("a").flash_attn is FlashAttention.OFF
    assert Settings().flash_attn is FlashAttention.AUTO
    with pytest.raises(SystemExit):
        parse_args(["--flash-attn", "maybe"])


@pytest.mark.parametrize(
    ("setting", "gpu_layers", "expected"),
    [
        (FlashAttention.ON, 0, 1),
        (FlashAttention.OFF, 0, 0),
        (FlashAttention.OFF, -1, 0),
        # On the CPU auto is off; this build has no GPU offload, so offloading runs on the CPU.
        (FlashAttention.AUTO, 0, 0),
        (FlashAttention.AUTO, -1, 0),
    ],
)
def test_flash_attention_setting_to_llama_cpp(
    setting: FlashAttention, gpu_layers: int, expected: int
) -> None:
    assert flash_attn_type(setting, gpu_layers) == expected


def test_auto_flash_attention_is_llama_cpps_choice_only_with_gpu_layers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("core.engine.llama_backend.gpu_offload_supported", lambda: True)
    assert flash_attn_type(FlashAttention.AUTO, -1) == -1  # LLAMA_FLASH_ATTN_TYPE_AUTO
    assert flash_attn_type(FlashAttention.AUTO, 0) == 0
    assert flash_attn_type(FlashAttention.OFF, 12) == 0


def test_core_keys_come_from_files_and_the_environment(tmp_path: Path) -> None:
    (tmp_path / "keys").write_text("# ops\nk1\n\nk2\n")
    args = parse_args(["--models-dir", str(tmp_path), "--api-key-file", str(tmp_path / "keys")])
    settings = build_settings(args, {"MINERVA_API_KEYS": "k3, k1"})
    assert settings.api_keys == ("k1", "k2", "k3")
    with pytest.raises(SystemExit):  # never on the command line, where `ps` shows it
        parse_args(["--models-dir", str(tmp_path), "--api-key", "k"])
    (tmp_path / "empty").write_text("# nothing\n")
    args = parse_args(["--models-dir", str(tmp_path), "--api-key-file", str(tmp_path / "empty")])
    with pytest.raises(ConfigError, match="holds no key"):
        build_settings(args, {})


@pytest.mark.parametrize(
    ("listen", "extra", "env", "refused"),
    [
        ("0.0.0.0:50051", [], {}, True),
        ("[::]:50051", [], {}, True),
        ("core.svc.cluster.local:50051", [], {}, True),
        ("0.0.0.0:50051", [], {"MINERVA_API_KEYS": "k"}, False),
        ("0.0.0.0:50051", ["--allow-unauthenticated"], {}, False),
        ("127.0.0.1:50051", [], {}, False),
        ("[::1]:50051", [], {}, False),
        ("localhost:50051", [], {}, False),
    ],
)
def test_core_denies_by_default_off_loopback(
    tmp_path: Path, listen: str, extra: list[str], env: dict[str, str], refused: bool
) -> None:
    args = parse_args(["--models-dir", str(tmp_path), "--listen", listen, *extra])
    if not refused:
        assert build_settings(args, env).listen == listen
        return
    with pytest.raises(ConfigError, match=r"without API keys.*--allow-unauthenticated"):
        build_settings(args, env)


def test_scanned_symlinks_must_resolve_under_the_allowed_roots(tmp_path: Path) -> None:
    models, elsewhere, shared = tmp_path / "models", tmp_path / "elsewhere", tmp_path / "shared"
    for d in (models, elsewhere, shared):
        d.mkdir()
    (elsewhere / "secret.gguf").write_bytes(b"GGUF")
    (shared / "ok.gguf").write_bytes(b"GGUF")
    (models / "real.gguf").write_bytes(b"GGUF")
    (models / "escape.gguf").symlink_to(elsewhere / "secret.gguf")
    (models / "linked.gguf").symlink_to(shared / "ok.gguf")
    (models / "loop.gguf").symlink_to(models / "loop.gguf")
    ids = [s.id for s in Registry(Settings(models_dir=models)).specs()]
    assert ids == ["real"]
    roots = (shared,)
    ids = [s.id for s in Registry(Settings(models_dir=models, allowed_roots=roots)).specs()]
    assert ids == ["linked", "real"]
    args = parse_args(["--models-dir", str(models), "--allowed-root", str(shared)])
    assert build_settings(args, {}).allowed_roots == (shared.resolve(),)


@pytest.mark.parametrize(
    ("flags", "refused"),
    [
        (["--tls-cert", "PEM"], "give both the certificate and its private key"),
        (["--tls-client-ca", "PEM"], "--tls-client-ca needs --tls-cert"),
        (["--tls-cert", "PEM", "--tls-key", "MISSING"], "cannot read the TLS private key"),
    ],
)
def test_core_tls_flags_are_checked_at_start_up(
    tmp_path: Path, flags: list[str], refused: str
) -> None:
    (tmp_path / "x.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    paths = {"PEM": str(tmp_path / "x.pem"), "MISSING": str(tmp_path / "missing.pem")}
    args = parse_args(["--models-dir", str(tmp_path), *(paths.get(f, f) for f in flags)])
    with pytest.raises(ConfigError, match=re.escape(refused)):
        build_settings(args, {})


def test_mutual_tls_counts_as_authentication_off_loopback(tmp_path: Path) -> None:
    (tmp_path / "x.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    pem = str(tmp_path / "x.pem")
    flags = ["--tls-cert", pem, "--tls-key", pem, "--tls-client-ca", pem]
    args = parse_args(["--models-dir", str(tmp_path), "--listen", "0.0.0.0:1", *flags])
    assert build_settings(args, {}).tls_client_ca == Path(pem)


def test_import_type_on_a_gguf_model_is_refused_not_ignored(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    opts = ModelOptions(id="m", path=tmp_path / "m.gguf", import_type=ImportType.Q8_0)
    with pytest.raises(ConfigError, match="import_type applies to SafeTensors models only"):
        Registry(Settings(models=(opts,), allowed_roots=(tmp_path,)))
