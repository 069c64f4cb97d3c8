"""The committed generated code matches what `make proto` would produce from the .proto files."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

GENERATED = ROOT / "proto" / "minerva" / "v1"


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), str(tmp_path)], check=True
    )
    fresh = sorted(p.name for p in (tmp_path / "minerva" / "v1").iterdir())
    assert fresh == sorted(p.name for p in GENERATED.iterdir() if "_pb2" in p.name)
    _, mismatch, errors = filecmp.cmpfiles(
        tmp_path / "minerva" / "v1", GENERATED, fresh, shallow=False
    )
    assert not mismatch and not errors, (
        f"stale generated code, run `make proto`: {mismatch + errors}"
    )


def test_generated_imports_are_package_qualified() -> None:
    grpc_module = (GENERATED / "inference_pb2_grpc.py").read_text()
    assert "from minerva.v1 import inference_pb2" in grpc_module
