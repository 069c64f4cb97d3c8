"""TOML config parsing and the registry's rules: ids, allowed roots, scanning, formats."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from core.errors import ConfigError, ModelNotFound
from core.metadata.types import ModelFormat
from core.registry import Registry, id_from_path, validate_id
from core.settings import Settings, load_config


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
    ],
)
def test_bad_config_is_a_config_error(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        load_config(write_config(tmp_path, text))
    assert fragment in err.value.message


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
