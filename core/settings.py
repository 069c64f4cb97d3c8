"""Typed server settings, built once in main() from the command line, environment and TOML config."""

from __future__ import annotations

import enum
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from minerva.v1.ratelimit import RateLimit

from core.engine.types import FlashAttention
from core.errors import ConfigError

DEFAULT_LISTEN = "127.0.0.1:50051"
_E = TypeVar("_E", bound=enum.Enum)


class ImportType(enum.Enum):
    """What SafeTensors weights become when imported to GGUF (norms and biases stay f32)."""

    F16 = "f16"
    Q8_0 = "q8_0"


def import_type(value: str, where: str = "") -> ImportType:
    return _choice(ImportType, "import_type", value, where)


def flash_attn(value: str, where: str = "") -> FlashAttention:
    return _choice(FlashAttention, "flash_attn", value, where)


def _choice(kind: type[_E], key: str, value: str, where: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        accepted = ", ".join(str(t.value) for t in kind)
        raise ConfigError(
            f"invalid setting `{key}`{where}: {value!r}; accepted: {accepted}"
        ) from None


@dataclass(frozen=True, slots=True)
class ModelOptions:
    """Per-model settings from a `[[models]]` table; None means "use the server default"."""

    id: str
    path: Path
    format: str | None = None
    context_size: int | None = None
    threads: int | None = None
    n_gpu_layers: int | None = None
    flash_attn: FlashAttention | None = None
    chat_template: str | None = None
    pinned: bool = False
    slots: int | None = None
    kv_cache_tokens: int | None = None
    # SafeTensors models only: the GGUF type their weights are converted to.
    import_type: ImportType | None = None

    def __post_init__(self) -> None:
        where = f" of model {self.id!r}"
        _check_min("context_size", self.context_size, 1, where)
        _check_min("threads", self.threads, 1, where)
        _check_range("slots", self.slots, 1, MAX_SLOTS, where)
        _check_min("kv_cache_tokens", self.kv_cache_tokens, 1, where)


@dataclass(frozen=True, slots=True)
class Settings:
    """Server settings; construction validates them, whether from TOML, CLI flags or a test."""

    listen: str = DEFAULT_LISTEN
    models_dir: Path | None = None
    models: tuple[ModelOptions, ...] = ()
    # Configured model paths must resolve (after symlinks) under one of these.
    allowed_roots: tuple[Path, ...] = ()
    # Upper bound on the context size when a model does not set one.
    default_context_size: int = 8192
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    n_gpu_layers: int = 0
    flash_attn: FlashAttention = FlashAttention.AUTO
    memory_budget_mb: int = 8192
    idle_ttl_s: float = 900.0
    # Requests allowed to wait per model behind the running ones; more are refused at once.
    queue_size: int = 16
    # Sequences generated at once per model; None: chosen from the context size (auto_slots).
    slots: int | None = None
    # KV cache cells per model, shared by its slots; None: default_kv_cache_tokens().
    kv_cache_tokens: int | None = None
    # Host RAM per model for KV prefixes of evicted slots (returning conversations stay warm).
    prompt_cache_mb: int = 256
    # SafeTensors models are converted to GGUF here (None: <models_dir>/.cache/gguf).
    import_cache_dir: Path | None = None
    import_type: ImportType = ImportType.F16
    # repr=False keeps keys out of any log line that prints the settings.
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    # When set, model administration (LoadModel, UnloadModel, keep-alive unloads) needs one.
    admin_keys: tuple[str, ...] = field(default=(), repr=False)
    shutdown_grace_s: float = 10.0
    max_message_mb: int = 16
    # Per request: the most tokens one may ask for (more is INVALID_ARGUMENT; unset max_tokens
    # means this many), and the most seconds it may generate (then it ends with LENGTH).
    max_tokens_cap: int | None = None
    max_generation_s: float | None = None
    # Per caller (API key, or address without keys): requests and tokens per minute; None is
    # no limit. Key files may give a key its own (`KEY rpm=N tpm=N`): key_rate_limits.
    rate_limit_rpm: int | None = None
    rate_limit_tpm: int | None = None
    key_rate_limits: tuple[tuple[str, RateLimit], ...] = field(default=(), repr=False)
    # gRPC over TLS with this certificate and key; with a client CA, mutual TLS (clients must
    # present a certificate it signed).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None

    def __post_init__(self) -> None:
        # replace() runs this too, so CLI overrides in build_settings are covered.
        for key, minimum in _SERVER_MINIMUMS.items():
            _check_min(key, getattr(self, key), minimum)
        _check_range("slots", self.slots, 1, MAX_SLOTS)
        _check_min("kv_cache_tokens", self.kv_cache_tokens, 1)
        _check_min("max_tokens_cap", self.max_tokens_cap, 1)
        _check_min("max_generation_s", self.max_generation_s, 0.001)
        _check_min("rate_limit_rpm", self.rate_limit_rpm, 1)
        _check_min("rate_limit_tpm", self.rate_limit_tpm, 1)

    @property
    def rate_limit(self) -> RateLimit:
        """The limit of callers without one of their own."""
        return RateLimit(self.rate_limit_rpm, self.rate_limit_tpm)


def import_cache_dir(settings: Settings) -> Path:
    """Where imported SafeTensors models go: configured, else the models directory's cache
    folder (hidden from its scan), else the user's cache."""
    if settings.import_cache_dir is not None:
        return settings.import_cache_dir
    if settings.models_dir is not None:
        return settings.models_dir / ".cache" / "gguf"
    return Path.home() / ".cache" / "minerva" / "gguf"


# llama.cpp's LLAMA_MAX_SEQ.
MAX_SLOTS = 256


def auto_slots(context_size: int) -> int:
    """Default slots for a per-sequence context: 8 up to 8k tokens, fewer for long contexts."""
    return max(1, min(8, 65536 // context_size))


def default_kv_cache_tokens(context_size: int, slots: int) -> int:
    """Default shared KV pool: room for up to 4 full sequences (the slots share it)."""
    return context_size * min(slots, 4)


# Smallest accepted value of each numeric server setting.
_SERVER_MINIMUMS: dict[str, float] = {
    "default_context_size": 1,
    "threads": 1,
    "memory_budget_mb": 1,
    "max_message_mb": 1,
    "queue_size": 0,
    "shutdown_grace_s": 0,
    "idle_ttl_s": 0,
    "prompt_cache_mb": 0,
}


def _check_range(key: str, value: int | None, low: int, high: int, where: str = "") -> None:
    _check_min(key, value, low, where)
    if value is not None and value > high:
        raise ConfigError(f"invalid setting `{key}`{where}: must be <= {high}, got {value!r}")


def _check_min(key: str, value: float | None, minimum: float, where: str = "") -> None:
    """ConfigError naming the key unless value is None (unset) or at least `minimum`."""
    # `not >=` so that NaN is refused too.
    if value is not None and not value >= minimum:
        raise ConfigError(f"invalid setting `{key}`{where}: must be >= {minimum:g}, got {value!r}")


_SERVER_KEYS = {
    "listen": str,
    "models_dir": Path,
    "default_context_size": int,
    "threads": int,
    "n_gpu_layers": int,
    "flash_attn": str,
    "memory_budget_mb": int,
    "idle_ttl_s": float,
    "queue_size": int,
    "slots": int,
    "kv_cache_tokens": int,
    "prompt_cache_mb": int,
    "shutdown_grace_s": float,
    "max_message_mb": int,
    "import_cache_dir": Path,
    "import_type": str,
    "tls_cert": Path,
    "tls_key": Path,
    "tls_client_ca": Path,
    "max_tokens_cap": int,
    "max_generation_s": float,
    "rate_limit_rpm": int,
    "rate_limit_tpm": int,
}
_MODEL_KEYS = {
    "id": str,
    "path": str,
    "format": str,
    "context_size": int,
    "threads": int,
    "n_gpu_layers": int,
    "flash_attn": str,
    "chat_template": str,
    "pinned": bool,
    "slots": int,
    "kv_cache_tokens": int,
    "import_type": str,
}


def load_config(path: Path) -> dict[str, Any]:
    """Parse a TOML config file into keyword arguments for Settings (paths relative to the file)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    base = path.resolve().parent
    server = _typed(data.get("server", {}), _SERVER_KEYS, "[server]")
    for key in ("models_dir", "import_cache_dir", "tls_cert", "tls_key", "tls_client_ca"):
        if key in server:
            server[key] = base / server[key]
    if "import_type" in server:
        server["import_type"] = import_type(server["import_type"], " in [server]")
    if "flash_attn" in server:
        server["flash_attn"] = flash_attn(server["flash_attn"], " in [server]")
    roots = data.get("server", {}).get("allowed_roots", [])
    if not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
        raise ConfigError("[server] allowed_roots must be a list of paths")
    server["allowed_roots"] = tuple(base / r for r in roots) or (base,)
    server["models"] = tuple(_model_options(m, base) for m in data.get("models", []))
    return server


def _model_options(table: Any, base: Path) -> ModelOptions:
    fields = _typed(table, _MODEL_KEYS, "[[models]]")
    for required in ("id", "path"):
        if required not in fields:
            raise ConfigError(f"[[models]] entry lacks `{required}`: {table!r}")
    fields["path"] = base / fields["path"]
    where = f" of model {fields['id']!r}"
    if "import_type" in fields:
        fields["import_type"] = import_type(fields["import_type"], where)
    if "flash_attn" in fields:
        fields["flash_attn"] = flash_attn(fields["flash_attn"], where)
    return ModelOptions(**fields)


def _typed(table: Any, schema: dict[str, type], where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key == "allowed_roots" and where == "[server]":
            continue
        kind = schema.get(key)
        if kind is None:
            raise ConfigError(f"{where}: unknown key `{key}`")
        expected = str if kind is Path else kind
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: `{key}` must be {expected.__name__}, got {value!r}")
        out[key] = Path(str(value)) if kind is Path else value
    return out
