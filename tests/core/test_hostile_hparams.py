"""GGUF hyperparameters llama.cpp asserts on (the process aborts): refused, the core serves on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from gguf import GGUFReader

from tests.conftest import DEFAULT_MODEL_PATH
from tests.core.conftest import refused_while_others_are_served

pytestmark = pytest.mark.asyncio(loop_scope="session")


def with_value(src: Path, dst: Path, key: str, value: float) -> None:
    """A copy of src with one scalar KV changed in place."""
    shutil.copy(src, dst)
    reader = GGUFReader(dst, "r+")
    field = reader.fields[key]
    field.parts[field.data[0]][0] = value
    reader.data.flush()


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("llama.block_count", 0, "llama.block_count is 0, outside 1..512"),
        ("llama.attention.layer_norm_rms_epsilon", float("nan"), "is nan, not a number >= 0"),
    ],
)
async def test_a_value_llama_cpp_asserts_on_is_refused(
    tmp_path: Path, key: str, value: float, said: str
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    with_value(DEFAULT_MODEL_PATH, models / "hostile.gguf", key, value)
    details = await refused_while_others_are_served(models, "hostile")
    assert "hostile.gguf" in details and said in details
