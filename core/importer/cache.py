"""Where converted models live: one file per source identity and output type, written to a temp
file and renamed, one conversion per key at a time, older conversions of the same source removed."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from core.errors import InsufficientStorage
from core.settings import ImportType

log = logging.getLogger(__name__)

_PARTIAL = ".partial"


def source_files(directory: Path, weights: Iterable[Path]) -> list[Path]:
    """Every file whose change changes the conversion: weights and the JSON/template beside them."""
    side = (
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "model.safetensors.index.json",
    )
    found = {p for p in (directory / n for n in side) if p.is_file()}
    return sorted(found | set(weights))


def identity_key(files: Iterable[Path], wanted: ImportType, version: int) -> str:
    """Digest of the files' names, sizes and mtimes, the output type and the importer version."""
    digest = hashlib.sha256(f"v{version}:{wanted.value}".encode())
    for path in files:
        st = path.stat()
        digest.update(f"\0{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


class ImportCache:
    """Converted GGUF files under one directory; safe for concurrent loads in one process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._swept = False

    def _stem(self, source: Path, wanted: ImportType) -> str:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", source.name).strip("-.") or "model"
        where = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:8]
        return f"{slug}-{where}-{wanted.value}"

    def path_for(self, source: Path, wanted: ImportType, key: str) -> Path:
        return self.directory / f"{self._stem(source, wanted)}-{key}.gguf"

    @contextlib.contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        """One conversion per key at a time; later callers wait, then find the file done."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield

    def sweep(self) -> None:
        """Once per process: remove partial files that a process no longer alive left behind
        (killed mid-conversion); each is as large as its model."""
        with self._guard:
            if self._swept:
                return
            self._swept = True
        for partial in self.directory.glob(f"*{_PARTIAL}"):
            pid = partial.name.removesuffix(_PARTIAL).rsplit(".", 1)[-1]
            if not pid.isdigit() or not _alive(int(pid)):
                log.info("removing %s, left by an interrupted conversion", partial)
                with contextlib.suppress(OSError):
                    partial.unlink()

    def check_space(self, needed: int, model_id: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.directory).free
        if free < needed:
            raise InsufficientStorage(
                f"converting to GGUF needs {needed / 2**20:.0f} MB in "
                f"{self.directory}, only {free / 2**20:.0f} MB is free"
            )

    @contextlib.contextmanager
    def writing(self, final: Path) -> Iterator[Path]:
        """A temp path beside `final`, renamed to it when the block succeeds, removed otherwise."""
        temp = final.with_name(f"{final.name}.{threading.get_ident()}.{os.getpid()}{_PARTIAL}")
        try:
            yield temp
            _fsync(temp)  # on disk before it takes the name: a power cut leaves no torn file
            os.replace(temp, final)
            _fsync(final.parent)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    def remove_older(self, source: Path, wanted: ImportType, keep: Path) -> None:
        """Drop earlier conversions of the same source and type (the source has changed since)."""
        for old in self.directory.glob(f"{self._stem(source, wanted)}-*.gguf"):
            if old != keep:
                log.info("removing stale conversion %s", old)
                with contextlib.suppress(OSError):
                    old.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
