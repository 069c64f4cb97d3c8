"""`minerva check PATH...`: validate model files with the core's header readers, no server."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.errors import MinervaError
from core.metadata.hparams_check import check_hyperparameters
from core.metadata.reader import detect_format, read_header
from core.metadata.types import ModelFormat, ModelMetadata
from core.metadata.vocab_check import check_vocabulary

NOT_A_MODEL = "not a model: expected a .gguf or .safetensors file or a checkpoint directory"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One path's verdict: its metadata when the headers read cleanly, else the reason."""

    path: Path
    metadata: ModelMetadata | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.metadata is not None


def check_path(path: Path) -> CheckResult:
    """Reads only headers (never weights); every failure is a result, never an exception."""
    if not path.exists():
        return CheckResult(path, error="no such file or directory")
    fmt = detect_format(path)
    if fmt is None:
        return CheckResult(path, error=NOT_A_MODEL)
    try:
        header = read_header(path, fmt)
        if fmt is ModelFormat.GGUF:
            check_hyperparameters(path, header)
            check_vocabulary(path)
        return CheckResult(path, metadata=header.metadata)
    except MinervaError as exc:
        # The readers start their messages with the path, which the report already shows.
        return CheckResult(path, error=exc.message.removeprefix(f"{path}: "))


def _count(value: int) -> str:
    for divisor, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= divisor:
            return f"{value / divisor:.2f}{suffix}"
    return str(value)


def describe(meta: ModelMetadata) -> str:
    """Key header facts in one line; unknown (zero) values are left out."""
    parts = [
        meta.format.value,
        meta.architecture,
        meta.quantization,
        f"{meta.file_size_bytes / 1_000_000:.1f} MB",
    ]
    facts = (
        (meta.tensor_count, "tensors"),
        (meta.layer_count, "layers"),
        (meta.vocab_size, "vocab"),
        (meta.context_length, "context"),
    )
    parts += [f"{label} {value}" for value, label in facts if value]
    if meta.parameter_count:
        parts.append(f"params {_count(meta.parameter_count)}")
    parts.append("chat template" if meta.has_chat_template else "no chat template")
    return " ".join(p for p in parts[:4] if p) + ", " + ", ".join(parts[4:])


def format_result(result: CheckResult) -> str:
    if result.metadata is not None:
        return f"OK    {result.path}  {describe(result.metadata)}"
    return f"FAIL  {result.path}  {result.error}"


def check_paths(paths: list[Path]) -> tuple[list[str], int]:
    """The report's lines and the exit code: 0 when every path is a valid model, else 1."""
    results = [check_path(p) for p in paths]
    return [format_result(r) for r in results], 0 if all(r.ok for r in results) else 1
