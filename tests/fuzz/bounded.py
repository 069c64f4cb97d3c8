"""Runs a header reader on hostile input: a result fit to serve, or InvalidModelFile, in bounds."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from core.errors import InvalidModelFile
from core.metadata.types import HeaderInfo
from core.services.convert import metadata_to_pb

# A reader may buffer what a file holds: a lying length (checked against the file's size) can
# make the GGUF reader read to the end of the file (its designed cap being 256 MiB), and while
# its buffer grows, what it holds and the chunk just read coexist: about 2x the file, and 3x
# leaves a margin. More means a length or count field was believed without that check.
BUFFER_FACTOR = 3
SLACK_BYTES = 16 << 20


def read_bounded(reader: Callable[[Path], HeaderInfo], path: Path) -> HeaderInfo | None:
    """reader(path) under tracemalloc; None when it refused the file with InvalidModelFile.
    Any other exception propagates, which fails the property."""
    limit = BUFFER_FACTOR * _size(path) + SLACK_BYTES
    tracemalloc.start()
    try:
        info = reader(path)
    except InvalidModelFile as error:
        # The message is the gRPC status details the client reads: text, UTF-8 encodable.
        assert error.message.strip(), "an InvalidModelFile without a message"
        error.message.encode("utf-8")
        return None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < limit, f"reading {path.name} allocated {peak >> 20} MiB"
    assert_servable(info)
    return info


def _size(path: Path) -> int:
    """Bytes in the file, or in every file of the directory tree."""
    if not path.is_dir():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def assert_servable(info: HeaderInfo) -> None:
    """What ListModels and GetModel do with a header must work: protobuf metadata (uint32
    fields, UTF-8 strings), header key/values as JSON text, the template as UTF-8."""
    metadata_to_pb(info.metadata).SerializeToString()
    json.dumps(info.scalars, ensure_ascii=False, default=str).encode("utf-8")
    json.dumps(info.array_lengths).encode("utf-8")
    if info.chat_template is not None:
        info.chat_template.encode("utf-8")
