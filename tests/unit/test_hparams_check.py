"""The hyperparameters llama.cpp's loader (and norm kernels) assert on, as table rows."""

from __future__ import annotations

import pytest

from core.metadata.hparams_check import hyperparameter_problem
from core.metadata.types import HeaderInfo, ModelFormat, ModelMetadata

SANE = {"llama.block_count": 30, "llama.attention.layer_norm_rms_epsilon": 1e-5}


def header(
    arch: str = "llama", arrays: dict[str, tuple[int, ...]] | None = None, **changes: object
) -> HeaderInfo:
    scalars = {**SANE, **{k.replace("__", "."): v for k, v in changes.items()}}
    scalars = {k.replace("llama.", f"{arch}.", 1): v for k, v in scalars.items()}
    meta = ModelMetadata(format=ModelFormat.GGUF, architecture=arch)
    arrays = arrays or {}
    lengths = {k: len(v) for k, v in arrays.items()}
    return HeaderInfo(meta, scalars=scalars, array_lengths=lengths, small_arrays=arrays)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({}, None),
        ({"llama__block_count": 0}, "llama.block_count is 0, outside 1..512"),
        ({"llama__block_count": 513}, "llama.block_count is 513, outside 1..512"),
        ({"llama__block_count": 512}, None),
        ({"llama__nextn_predict_layers": 31}, "llama.nextn_predict_layers is 31, outside 0..30"),
        ({"llama__nextn_predict_layers": 1}, None),
        ({"llama__expert_count": 1025}, "expert_count is 1025, outside 0..1024"),
        ({"llama__expert_used_count": 2}, "expert_count is 0, yet experts are used or grouped"),
        ({"llama__expert_count": 8}, "expert_used_count 0, outside 1..8"),
        ({"llama__expert_count": 8, "llama__expert_used_count": 9}, "expert_used_count 9"),
        ({"llama__expert_count": 8, "llama__expert_used_count": 2}, None),
        (
            {
                "llama__expert_count": 8,
                "llama__expert_used_count": 2,
                "llama__expert_group_count": 3,
            },
            "in 3 groups, 0 used",
        ),
        (
            {
                "llama__expert_count": 8,
                "llama__expert_used_count": 2,
                "llama__expert_group_count": 4,
                "llama__expert_group_used_count": 2,
            },
            None,
        ),
        ({"llama__attention__layer_norm_rms_epsilon": -1.0}, "is -1.0, not a number >= 0"),
        ({"llama__attention__layer_norm_epsilon": float("nan")}, "is nan, not a number >= 0"),
        ({"llama__attention__group_norm_epsilon": 0.0}, None),
        ({"llama__block_count": "30"}, None),  # not an integer: llama.cpp's own type check
        ({"llama__rope__dimension_count": 63}, "rope.dimension_count is 63, an odd number"),
        (
            {"llama__rope__dimension_count": 512, "llama__attention__key_length": 256},
            "rope.dimension_count is 512, wider than a head (256)",
        ),
        (
            {
                "llama__rope__dimension_count": 128,
                "llama__embedding_length": 576,
                "llama__attention__head_count": 9,
            },
            "wider than a head (64)",
        ),
        ({"llama__rope__dimension_count": 64, "llama__attention__key_length": 192}, None),
    ],
)
def test_values_llama_cpp_asserts_on(changes: dict[str, object], problem: str | None) -> None:
    found = hyperparameter_problem(header(**changes))
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_a_per_layer_count_of_experts_used_counts_by_its_largest_value() -> None:
    # Nemotron-H writes expert_used_count as an array (llama.cpp's get_key_or_arr).
    def used(*values: int) -> dict[str, tuple[int, ...]]:
        return {"llama.expert_used_count": values}

    assert hyperparameter_problem(header(arrays=used(*[2] * 30), llama__expert_count=8)) is None
    too_many = header(arrays=used(*[2] * 29, 9), llama__expert_count=8)
    assert "expert_used_count 9" in (hyperparameter_problem(too_many) or "")
    assert hyperparameter_problem(header(arrays=used(*[0] * 30))) is None
    stray = header(arrays=used(*[0] * 29, 1))
    assert "yet experts are used or grouped" in (hyperparameter_problem(stray) or "")
    # Read into uint32s: a negative int32 is a huge count.
    negative = header(arrays=used(*[2] * 29, -1), llama__expert_count=8)
    assert "expert_used_count 4294967295" in (hyperparameter_problem(negative) or "")


def test_hunyuan_reads_one_expert_as_none() -> None:
    one = {"hunyuan-dense.expert_count": 1}
    assert hyperparameter_problem(header("hunyuan-dense", **one)) is None
    assert "expert_used_count 0" in (hyperparameter_problem(header(llama__expert_count=1)) or "")


@pytest.mark.parametrize(
    ("scaling", "refused"),
    [
        ("yarn", False),
        ("none", False),
        ("longrope", False),
        ("yarn\0junk", False),
        ("dynamic", True),
    ],
)
def test_an_unknown_rope_scaling_type_is_refused(scaling: str, refused: bool) -> None:
    problem = hyperparameter_problem(header(llama__rope__scaling__type=scaling))
    assert (problem is not None) is refused
    if refused:
        assert "rope.scaling.type is 'dynamic'" in (problem or "")
