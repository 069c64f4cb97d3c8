"""Fixtures shared by every test layer: where the real models live."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "models"
DEFAULT_MODEL_PATH = MODELS_DIR / "SmolLM2-135M-Instruct-Q4_1.gguf"
EXTRA_MODEL_PATH = MODELS_DIR / "gemma-3-270m-Q4_K_M.gguf"
# Ids the registry derives from those file names (lower-cased stem).
DEFAULT_MODEL_ID = "smollm2-135m-instruct-q4_1"
EXTRA_MODEL_ID = "gemma-3-270m-q4_k_m"


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    if not DEFAULT_MODEL_PATH.is_file():
        pytest.fail(f"{DEFAULT_MODEL_PATH} is missing: run `make models` (make test does it)")
    return DEFAULT_MODEL_PATH


@pytest.fixture(scope="session")
def extra_model_path() -> Path:
    if not EXTRA_MODEL_PATH.is_file():
        pytest.fail(f"{EXTRA_MODEL_PATH} is missing: run `make models-extra` (make test does it)")
    return EXTRA_MODEL_PATH
