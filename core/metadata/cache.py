"""Thread-safe LRU cache of header reads, invalidated when any file involved changes."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.errors import InvalidModelFile
from core.metadata.reader import read_header
from core.metadata.safetensors_reader import (
    CONFIG_NAME,
    INDEX_NAME,
    TEMPLATE_FILE_NAME,
    TOKENIZER_CONFIG_NAME,
)
from core.metadata.types import HeaderInfo, ModelFormat

DEFAULT_MAX_ENTRIES = 256
# Files beside SafeTensors weights whose contents end up in the metadata.
_SIDE_FILES = (INDEX_NAME, CONFIG_NAME, TOKENIZER_CONFIG_NAME, TEMPLATE_FILE_NAME)

# (name, size, mtime_ns, inode) per file; None for a file that is absent.
Fingerprint = tuple[tuple[str, int, int, int] | None, ...]


@dataclass(frozen=True, slots=True)
class _Entry:
    fingerprint: Fingerprint
    result: HeaderInfo | InvalidModelFile


def _stat(path: Path) -> tuple[str, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (path.name, st.st_size, st.st_mtime_ns, st.st_ino)


def _involved_files(path: Path, fmt: ModelFormat) -> list[Path]:
    """Every file whose change can change the header read of path."""
    if fmt is not ModelFormat.SAFETENSORS:
        return [path]
    directory = path if path.is_dir() else path.parent
    files = [directory / name for name in _SIDE_FILES]
    if path.is_dir():
        # Shards are the directory's .safetensors files; listing beats parsing the index.
        with os.scandir(path) as entries:
            files += sorted(Path(e.path) for e in entries if e.name.endswith(".safetensors"))
    else:
        files.append(path)
    return files


def fingerprint(path: Path, fmt: ModelFormat) -> Fingerprint:
    try:
        return tuple(_stat(f) for f in _involved_files(path, fmt))
    except OSError:
        return (None,)


class HeaderCache:
    """Caches HeaderInfo (and InvalidModelFile failures) per resolved path and file stats."""

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        read: Callable[[Path, ModelFormat], HeaderInfo] = read_header,
    ) -> None:
        self._max_entries = max_entries
        self._read = read
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[Path, ModelFormat], _Entry] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, path: Path, fmt: ModelFormat) -> HeaderInfo:
        """The header of path, read again only if a file involved changed since the last read."""
        key = (_resolve(path), fmt)
        current = fingerprint(key[0], fmt)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.fingerprint == current:
                self._entries.move_to_end(key)
                return _unwrap(entry)
        # Read outside the lock: a slow file must not stall lookups of other models.
        try:
            entry = _Entry(current, self._read(key[0], fmt))
        except InvalidModelFile as exc:
            # Keep a bare copy: the original's traceback pins the reader's frames and buffers.
            entry = _Entry(current, type(exc)(exc.message, param=exc.param))
        self._store(key, entry)
        return _unwrap(entry)

    def invalidate(self, path: Path | None = None) -> None:
        """Forget one path (every format), or everything."""
        with self._lock:
            if path is None:
                self._entries.clear()
                return
            resolved = _resolve(path)
            for key in [k for k in self._entries if k[0] == resolved]:
                del self._entries[key]

    def _store(self, key: tuple[Path, ModelFormat], entry: _Entry) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)


def _resolve(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python 3.11)
        return path.absolute()


def _unwrap(entry: _Entry) -> HeaderInfo:
    result = entry.result
    if isinstance(result, InvalidModelFile):
        # A fresh exception each time: re-raising one instance would grow its traceback forever.
        raise type(result)(result.message, param=result.param)
    return result
