"""The hyperparameters llama.cpp's loader (and norm kernels) assert on, as table rows."""

from __future__ import annotations

import pytest

from core.metadata.hparams_check import hyperparameter_problem
from core.metadata.types import HeaderInfo, ModelFormat, ModelMetadata

SANE = {"llama.block_count": 30, "llama.attention.layer_norm_rms_epsilon": 1e-5}


def header(**changes: object) -> HeaderInfo:
    scalars = {**SANE, **{k.replace("__", "."): v for k, v in changes.items()}}
    meta = ModelMetadata(format=ModelFormat.GGUF, architecture="llama")
    return HeaderInfo(meta, scalars=scalars)  # type: ignore[arg-type]


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
    ],
)
def test_values_llama_cpp_asserts_on(changes: dict[str, object], problem: str | None) -> None:
    found = hyperparameter_problem(header(**changes))
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
