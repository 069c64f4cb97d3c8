"""HeaderCache: hits, invalidation on change, cached failures, LRU bound; and format dispatch."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from core.errors import InvalidModelFile
from core.metadata.cache import HeaderCache
from core.metadata.reader import READERS, detect_format, read_header
from core.metadata.types import HeaderInfo, ModelFormat
from tests.unit.conftest import write_tiny_gguf

GGUF = ModelFormat.GGUF
SAFETENSORS = ModelFormat.SAFETENSORS


class CountingReader:
    """read_header, counting the reads that actually reach a file."""

    def __init__(self) -> None:
        self.calls: list[Path] = []

    def __call__(self, path: Path, fmt: ModelFormat) -> HeaderInfo:
        self.calls.append(path)
        return read_header(path, fmt)


@pytest.fixture
def reader() -> CountingReader:
    return CountingReader()


def bump_mtime(path: Path) -> None:
    """Move mtime forward explicitly: a rewrite within one clock tick may keep it."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_hit_returns_the_same_object(tiny_gguf: Path, reader: CountingReader) -> None:
    cache = HeaderCache(read=reader)
    first = cache.get(tiny_gguf, GGUF)
    assert cache.get(tiny_gguf, GGUF) is first
    assert first.metadata.architecture == "llama"
    assert reader.calls == [tiny_gguf.resolve()]


def test_paths_are_resolved(tiny_gguf: Path, reader: CountingReader) -> None:
    link = tiny_gguf.parent / "link.gguf"
    link.symlink_to(tiny_gguf)
    cache = HeaderCache(read=reader)
    assert cache.get(link, GGUF) is cache.get(tiny_gguf, GGUF)
    assert len(reader.calls) == 1


def test_modification_invalidates(tmp_path: Path, reader: CountingReader) -> None:
    path = write_tiny_gguf(tmp_path / "m.gguf")
    cache = HeaderCache(read=reader)
    assert cache.get(path, GGUF).metadata.vocab_size == 10
    write_tiny_gguf(path, vocab_size=64)
    bump_mtime(path)
    assert cache.get(path, GGUF).metadata.vocab_size == 64
    assert len(reader.calls) == 2


def test_failure_is_cached_until_the_file_changes(tmp_path: Path, reader: CountingReader) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"NOPE" + bytes(60))
    cache = HeaderCache(read=reader)
    for _ in range(3):
        with pytest.raises(InvalidModelFile, match="bad magic"):
            cache.get(path, GGUF)
    assert len(reader.calls) == 1
    write_tiny_gguf(path)
    bump_mtime(path)
    assert cache.get(path, GGUF).metadata.tensor_count == 6
    assert len(reader.calls) == 2


def test_missing_file_is_cached_then_found(tmp_path: Path, reader: CountingReader) -> None:
    path = tmp_path / "later.gguf"
    cache = HeaderCache(read=reader)
    with pytest.raises(InvalidModelFile, match="cannot open"):
        cache.get(path, GGUF)
    write_tiny_gguf(path)
    assert cache.get(path, GGUF).metadata.layer_count == 2


def test_symlink_loop_is_an_invalid_file(tmp_path: Path, reader: CountingReader) -> None:
    (tmp_path / "a.gguf").symlink_to(tmp_path / "b.gguf")
    (tmp_path / "b.gguf").symlink_to(tmp_path / "a.gguf")
    cache = HeaderCache(read=reader)
    with pytest.raises(InvalidModelFile, match="cannot open: Too many levels of symbolic links"):
        cache.get(tmp_path / "a.gguf", GGUF)


def test_lru_bound_evicts_the_least_recently_used(tmp_path: Path, reader: CountingReader) -> None:
    paths = [write_tiny_gguf(tmp_path / f"m{i}.gguf") for i in range(3)]
    cache = HeaderCache(max_entries=2, read=reader)
    cache.get(paths[0], GGUF)
    cache.get(paths[1], GGUF)
    cache.get(paths[0], GGUF)  # now paths[1] is the least recently used
    cache.get(paths[2], GGUF)
    assert len(cache) == 2
    cache.get(paths[0], GGUF)
    assert len(reader.calls) == 3
    cache.get(paths[1], GGUF)
    assert len(reader.calls) == 4


def test_invalidate_forgets_a_path(tiny_gguf: Path, reader: CountingReader) -> None:
    cache = HeaderCache(read=reader)
    cache.get(tiny_gguf, GGUF)
    cache.invalidate(tiny_gguf)
    cache.get(tiny_gguf, GGUF)
    cache.invalidate()
    assert len(cache) == 0
    assert len(reader.calls) == 2


def write_sharded(directory: Path) -> Path:
    directory.mkdir()
    save_file({"a": np.zeros(4, dtype=np.float32)}, str(directory / "s1.safetensors"))
    save_file({"b": np.zeros(2, dtype=np.float32)}, str(directory / "s2.safetensors"))
    index = '{"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}'
    (directory / "model.safetensors.index.json").write_text(index)
    (directory / "config.json").write_text('{"model_type": "llama"}')
    return directory


@pytest.mark.parametrize(
    "changed", ["s2.safetensors", "model.safetensors.index.json", "config.json"]
)
def test_sharded_directory_invalidated_by_any_file(
    tmp_path: Path, reader: CountingReader, changed: str
) -> None:
    directory = write_sharded(tmp_path / "sharded")
    cache = HeaderCache(read=reader)
    assert cache.get(directory, SAFETENSORS).metadata.parameter_count == 6
    cache.get(directory, SAFETENSORS)
    assert len(reader.calls) == 1
    bump_mtime(directory / changed)
    cache.get(directory, SAFETENSORS)
    assert len(reader.calls) == 2


def test_concurrent_gets_agree(tiny_gguf: Path, reader: CountingReader) -> None:
    cache = HeaderCache(read=reader)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: cache.get(tiny_gguf, GGUF), range(64)))
    assert {r.metadata.tensor_count for r in results} == {6}
    # Later gets are hits on the one stored entry.
    assert all(cache.get(tiny_gguf, GGUF) is cache.get(tiny_gguf, GGUF) for _ in range(3))
    assert 1 <= len(reader.calls) <= 8


# ---- dispatch -------------------------------------------------------------------------------


def test_readers_cover_every_format() -> None:
    assert set(READERS) == set(ModelFormat)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "m.gguf", GGUF),
        (lambda d: d / "M.GGUF", GGUF),
        (lambda d: d / "m.safetensors", SAFETENSORS),
        (lambda d: write_sharded(d / "sharded"), SAFETENSORS),
        (lambda d: _dir_with(d / "single", "model.safetensors"), SAFETENSORS),
        # Pickle checkpoints are recognised (to be listed with an error), never opened.
        (lambda d: _dir_with(d / "torch", "pytorch_model.bin"), ModelFormat.PICKLE),
        (lambda d: d / "m.bin", ModelFormat.PICKLE),
        (lambda d: d / "m.PTH", ModelFormat.PICKLE),
        (lambda d: d / "m.pt", ModelFormat.PICKLE),
        (lambda d: _dir_with(d / "other", "notes.txt"), None),
        (lambda d: d / "m.txt", None),
    ],
)
def test_detect_format(
    tmp_path: Path, make: Callable[[Path], Path], expected: ModelFormat | None
) -> None:
    assert detect_format(make(tmp_path)) is expected


def _dir_with(directory: Path, name: str) -> Path:
    directory.mkdir()
    (directory / name).write_bytes(b"")
    return directory


def test_read_header_dispatches_by_format(tiny_gguf: Path) -> None:
    assert read_header(tiny_gguf, GGUF).metadata.format is GGUF
    with pytest.raises(InvalidModelFile, match="invalid SafeTensors model"):
        read_header(tiny_gguf, SAFETENSORS)
