"""Engine sizing from settings and headers: per-sequence context, slots, KV pool, memory estimate."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from core.engine.types import FlashAttention
from core.engine_factory import EngineFactory, Sizing
from core.metadata.gguf_reader import read_gguf
from core.metadata.types import ModelFormat
from core.registry import ModelSpec

MB = 2**20


def spec(path: Path, **fields: object) -> ModelSpec:
    base = {"context_size": None, "threads": 2, "n_gpu_layers": 0}
    return ModelSpec(id="m", path=path, format=ModelFormat.GGUF, **{**base, **fields})  # type: ignore[arg-type]


def test_sizing_defaults_follow_the_context(default_model_path: Path) -> None:
    header = read_gguf(default_model_path)
    factory = EngineFactory(default_context_size=2048, queue_size=4)
    assert factory.sizing(spec(default_model_path), header) == Sizing(2048, 8, 8192)
    pinned = factory.sizing(spec(default_model_path, slots=2, kv_cache_tokens=100), header)
    assert pinned == Sizing(2048, 2, 2048)  # the pool holds at least one whole sequence


def test_a_requested_context_is_clamped_to_the_trained_one(default_model_path: Path) -> None:
    header = read_gguf(default_model_path)  # SmolLM2 was trained on 8192 tokens
    factory = EngineFactory(default_context_size=2048, queue_size=4)
    configured = spec(default_model_path, context_size=1024)
    assert factory.context_size(configured, header) == 1024
    assert factory.context_size(configured, header, 4096) == 4096  # the request wins
    assert factory.context_size(configured, header, 10**6) == 8192
    assert factory.sizing(configured, header, 512) == Sizing(512, 8, 2048)
    small, large = (factory.estimate_bytes(configured, header, n) for n in (512, 4096))
    kv_growth = 2 * 30 * (4 * 4096 - 4 * 512) * 3 * (64 + 64)  # the KV pool grows...
    scores_growth = 4 * (4 * 4096 - 4 * 512) * 512 * 9  # ...and so do the attention scores
    assert large - small == kv_growth + scores_growth


def test_estimate_counts_weights_every_slots_kv_and_the_prompt_cache(
    default_model_path: Path, extra_model_path: Path
) -> None:
    factory = EngineFactory(default_context_size=2048, queue_size=4, prompt_cache_bytes=64 * MB)
    smol = read_gguf(default_model_path)
    # SmolLM2-135M: 30 layers, 3 KV heads of 64 (keys and values), f16, 8192 shared cells.
    kv = 2 * 30 * 8192 * 3 * (64 + 64)
    # Without flash attention (the CPU's default): f32 scores of a 512-token batch, 9 heads.
    scores = 4 * 8192 * 512 * 9
    expected = smol.metadata.file_size_bytes + kv + scores + 64 * MB
    assert factory.estimate_bytes(spec(default_model_path), smol) == expected
    flash = spec(default_model_path, flash_attn=FlashAttention.ON)
    assert factory.estimate_bytes(flash, smol) == expected - scores
    # Gemma 3 270M: 18 layers, 1 KV head of 256 (head size from key_length, not 640 / 4).
    gemma = read_gguf(extra_model_path)
    kv = 2 * 18 * 8192 * 1 * (256 + 256)
    expected = gemma.metadata.file_size_bytes + kv + 4 * 8192 * 512 * 4 + 64 * MB
    assert factory.estimate_bytes(spec(extra_model_path), gemma) == expected


def test_hostile_head_counts_never_shrink_the_estimate(default_model_path: Path) -> None:
    """Negative or zero counts in a header are unknown: the estimate falls back to the width of
    the embedding (keys and values), never below it."""
    factory = EngineFactory(default_context_size=2048, queue_size=4)
    honest = read_gguf(default_model_path)
    plain = factory.estimate_bytes(spec(default_model_path), honest)
    for key, value in (("head_count_kv", -3), ("key_length", -64), ("head_count", -9)):
        scalars = {**honest.scalars, f"llama.attention.{key}": value}
        hostile = replace(honest, scalars=scalars)
        assert factory.estimate_bytes(spec(default_model_path), hostile) >= plain
