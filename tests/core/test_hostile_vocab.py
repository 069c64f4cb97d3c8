"""GGUF vocabularies that would take the whole process down in llama.cpp: a repeated token (an
abort while loading), a SentencePiece vocabulary without a byte token (an abort tokenizing "é"),
an RWKV vocabulary with a dead end (its tokenizer allocates forever)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from gguf import GGUFReader

from tests.conftest import DEFAULT_MODEL_PATH
from tests.core.conftest import refused_while_others_are_served

pytestmark = pytest.mark.asyncio(loop_scope="session")


def repeat_a_token(src: Path, dst: Path) -> tuple[int, int, bytes]:
    """A copy of src in which a token takes the text of the one before it (one of the same
    length, so the file stays well formed); returns both ids and that text."""
    shutil.copy(src, dst)
    reader = GGUFReader(dst, "r+")
    field = reader.fields["tokenizer.ggml.tokens"]
    texts = [field.parts[i] for i in field.data]
    first = next(
        i
        for i in range(1000, len(texts) - 1)
        if len(texts[i]) == len(texts[i + 1]) and bytes(texts[i]) != bytes(texts[i + 1])
    )
    texts[first + 1][:] = texts[first]
    reader.data.flush()
    return first, first + 1, bytes(texts[first])


def without_byte_token(src: Path, dst: Path, byte: int) -> None:
    """A copy of SentencePiece src whose "<0xXX>" token for `byte` is spelled in lower case (the
    same length, and no longer what llama.cpp looks up)."""
    shutil.copy(src, dst)
    reader = GGUFReader(dst, "r+")
    field = reader.fields["tokenizer.ggml.tokens"]
    wanted = b"<0x%02X>" % byte
    text = next(field.parts[i] for i in field.data if bytes(field.parts[i]) == wanted)
    text[:] = list(wanted.lower())
    reader.data.flush()


def as_rwkv(src: Path, dst: Path) -> None:
    """A copy of src whose tokenizer claims to be RWKV's ("gpt2" -> "rwkv", the same length): its
    byte-level BPE tokens start with bytes such as 0xc2 that are no token by themselves."""
    shutil.copy(src, dst)
    reader = GGUFReader(dst, "r+")
    field = reader.fields["tokenizer.ggml.model"]
    assert bytes(field.parts[field.data[0]]) == b"gpt2"
    field.parts[field.data[0]][:] = list(b"rwkv")
    reader.data.flush()


async def test_a_repeated_token_is_refused_and_the_core_keeps_serving(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    first, second, text = repeat_a_token(DEFAULT_MODEL_PATH, models / "twice.gguf")
    details = await refused_while_others_are_served(models, "twice")
    assert "twice.gguf" in details and repr(text) in details
    assert f"ids {first} and {second}" in details


async def test_a_missing_byte_token_is_refused_and_the_core_keeps_serving(
    tmp_path: Path, extra_model_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    without_byte_token(extra_model_path, models / "no-c3.gguf", 0xC3)
    details = await refused_while_others_are_served(models, "no-c3")
    assert "no-c3.gguf" in details and "no byte token <0xC3>" in details


async def test_an_rwkv_dead_end_is_refused_and_the_core_keeps_serving(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    as_rwkv(DEFAULT_MODEL_PATH, models / "dead-end.gguf")
    details = await refused_while_others_are_served(models, "dead-end")
    assert "dead-end.gguf" in details and "RWKV" in details
    assert "byte 0xc2" in details and "no token for that byte alone" in details
