"""The model registry: model id -> spec, from the TOML config and a scanned models directory."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from core.engine.types import FlashAttention
from core.errors import ConfigError, InvalidModelFile, ModelNotFound
from core.metadata.cache import HeaderCache
from core.metadata.reader import detect_format
from core.metadata.types import HeaderInfo, ModelFormat
from core.settings import ImportType, ModelOptions, Settings

log = logging.getLogger(__name__)

# Ids travel in URLs and health service names: no path characters.
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything needed to describe and load one model."""

    id: str
    path: Path
    format: ModelFormat
    context_size: int | None
    threads: int
    n_gpu_layers: int
    chat_template: str | None = None
    flash_attn: FlashAttention = FlashAttention.AUTO
    pinned: bool = False
    configured: bool = False
    # None: chosen from the context size.
    slots: int | None = None
    kv_cache_tokens: int | None = None
    # SafeTensors only: the GGUF type the import writes.
    import_type: ImportType = ImportType.F16


def validate_id(model_id: str) -> str:
    if not _ID_RE.match(model_id):
        raise ConfigError(
            f"invalid model id {model_id!r}: use letters, digits, '.', '_', '-', ':' (max 128)"
        )
    return model_id


def id_from_path(path: Path) -> str:
    """Derive an id from a scanned file or directory name: lower-cased stem, safe characters."""
    stem = path.name if path.is_dir() else path.stem
    return re.sub(r"[^a-z0-9._:-]+", "-", stem.lower()).strip("-.") or "model"


def fingerprint(path: Path) -> str:
    """Short digest of the file's identity (path, size, mtime): changes when the file does.
    A directory's covers the files directly inside it (weights, config, tokenizer)."""
    st = path.stat()
    raw = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    if path.is_dir():
        with os.scandir(path) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.is_file():
                    est = entry.stat()
                    raw += f"\0{entry.name}:{est.st_size}:{est.st_mtime_ns}"
    return "fp_" + hashlib.sha256(raw.encode()).hexdigest()[:12]


def _under(path: Path, roots: Iterable[Path]) -> bool:
    return any(path.is_relative_to(root.resolve()) for root in roots)


def _configured_format(opts: ModelOptions) -> ModelFormat:
    try:
        return ModelFormat(opts.format)
    except ValueError:
        accepted = ", ".join(repr(f.value) for f in ModelFormat)
        raise ConfigError(
            f"model {opts.id!r}: unknown format {opts.format!r}; accepted: {accepted}"
        ) from None


class Registry:
    """Known models. Scans its directory again on each listing so new files show up."""

    def __init__(self, settings: Settings, cache: HeaderCache | None = None) -> None:
        self._settings = settings
        self._cache = cache or HeaderCache()
        self._lock = threading.Lock()
        self._configured = {s.id: s for s in map(self._from_options, settings.models)}
        self._scanned: dict[str, ModelSpec] = {}
        self.rescan()

    def _from_options(self, opts: ModelOptions) -> ModelSpec:
        validate_id(opts.id)
        resolved = opts.path.resolve()
        roots = self._settings.allowed_roots or (
            (self._settings.models_dir,) if self._settings.models_dir else ()
        )
        if not _under(resolved, roots):
            raise ConfigError(f"model {opts.id!r}: {opts.path} is outside the allowed roots")
        fmt = _configured_format(opts) if opts.format else detect_format(resolved)
        if fmt is None:
            raise ConfigError(f"model {opts.id!r}: cannot tell the format of {opts.path}")
        if opts.import_type is not None and fmt is not ModelFormat.SAFETENSORS:
            raise ConfigError(
                f"model {opts.id!r}: import_type applies to SafeTensors models only; "
                f"{opts.path} is {fmt.value}"
            )
        return self._spec(opts.id, resolved, fmt, opts)

    def _spec(
        self, model_id: str, path: Path, fmt: ModelFormat, opts: ModelOptions | None
    ) -> ModelSpec:
        s = self._settings
        return ModelSpec(
            id=model_id,
            path=path,
            format=fmt,
            context_size=opts.context_size if opts and opts.context_size else None,
            threads=opts.threads if opts and opts.threads else s.threads,
            n_gpu_layers=opts.n_gpu_layers
            if opts and opts.n_gpu_layers is not None
            else s.n_gpu_layers,
            chat_template=opts.chat_template if opts else None,
            flash_attn=opts.flash_attn if opts and opts.flash_attn else s.flash_attn,
            pinned=opts.pinned if opts else False,
            configured=opts is not None,
            slots=opts.slots if opts and opts.slots else s.slots,
            kv_cache_tokens=opts.kv_cache_tokens
            if opts and opts.kv_cache_tokens
            else s.kv_cache_tokens,
            import_type=opts.import_type if opts and opts.import_type else s.import_type,
        )

    def rescan(self) -> None:
        """Pick up files added to or removed from the models directory."""
        directory = self._settings.models_dir
        found: dict[str, ModelSpec] = {}
        if directory is not None and directory.is_dir():
            for entry in sorted(directory.iterdir()):
                spec = self._scanned_spec(entry)
                if spec is None or spec.id in self._configured or spec.id in found:
                    continue
                found[spec.id] = spec
        with self._lock:
            self._scanned = found

    def _scanned_spec(self, entry: Path) -> ModelSpec | None:
        """The spec for one directory entry, or None (logged) when it is not a usable model."""
        if entry.name.startswith("."):
            return None
        # One unreadable entry (e.g. a chmod 000 directory) must not hide every other model.
        try:
            fmt = detect_format(entry)
            model_id = id_from_path(entry) if fmt is not None else ""
        except OSError as exc:
            log.warning("skipping %s: cannot read it: %s", entry, exc)
            return None
        if fmt is None:
            return None
        if not self._scanned_inside(entry):
            log.warning(
                "skipping %s: it resolves to %s, outside the models directory and the allowed "
                "roots (or not at all)",
                entry,
                os.path.realpath(entry),
            )
            return None
        if not _ID_RE.match(model_id):
            log.warning("skipping %s: derived id %r is not a valid model id", entry, model_id)
            return None
        return self._spec(model_id, entry, fmt, None)

    def _scanned_inside(self, entry: Path) -> bool:
        """A scanned entry (a symlink, say) must resolve under the models directory or an
        allowed root, as configured paths must: the directory is not a window onto the host."""
        directory = self._settings.models_dir
        roots = (*self._settings.allowed_roots, *((directory,) if directory else ()))
        try:
            return _under(entry.resolve(), roots)
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python 3.11)
            return False

    def specs(self) -> list[ModelSpec]:
        with self._lock:
            merged = {**self._scanned, **self._configured}
        return [merged[k] for k in sorted(merged)]

    def get(self, model_id: str) -> ModelSpec:
        with self._lock:
            spec = self._configured.get(model_id) or self._scanned.get(model_id)
        if spec is None:
            raise ModelNotFound(f"model {model_id!r} not found", param="model_id")
        return spec

    def header(self, spec: ModelSpec) -> HeaderInfo:
        """Header metadata for a model; InvalidModelFile names the model and the defect."""
        try:
            return self._cache.get(spec.path, spec.format)
        except InvalidModelFile as exc:
            raise InvalidModelFile(f"model {spec.id!r}: {exc.message}") from exc
        except OSError as exc:
            raise InvalidModelFile(
                f"model {spec.id!r}: cannot read {spec.path.name}: {exc.strerror}"
            ) from exc
