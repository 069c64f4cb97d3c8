"""Deployment rules both processes share: where API keys come from, and the refusal to serve
beyond this host without them (deny by default off loopback)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from pathlib import Path

from minerva.v1.ratelimit import RateLimit, RateLimitSyntaxError, parse_limit

ALLOW_FLAG = "--allow-unauthenticated"


class ExposureError(Exception):
    """A setting that would expose a server, or keys that cannot be read; for the operator."""


def listen_host(listen: str) -> str:
    """The host part of HOST:PORT, [V6]:PORT or a bare port (which listens everywhere)."""
    host, _, _port = listen.rpartition(":")
    return host.strip("[]")


def is_loopback(host: str) -> bool:
    """Only this machine can connect: localhost or a loopback address ("" and 0.0.0.0 are not)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name may resolve to anything


def check_exposure(what: str, hosts: Iterable[str], has_keys: bool, allowed: bool) -> None:
    """ExposureError when a non-loopback host would be served without API keys."""
    if has_keys or allowed:
        return
    for host in hosts:
        if not is_loopback(host):
            shown = host or "every interface"
            raise ExposureError(
                f"refusing to serve the {what} on {shown} without API keys: set "
                f"MINERVA_API_KEYS or --api-key-file, or pass {ALLOW_FLAG} to serve it open"
            )


def _key_lines(path: Path) -> list[list[str]]:
    """A key file's lines split into words (the key, then optional rate limits)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ExposureError(f"cannot read key file {path}: {exc}") from exc
    lines = [line.split() for line in text.splitlines() if not line.lstrip().startswith("#")]
    lines = [words for words in lines if words]
    if not lines:
        raise ExposureError(f"key file {path} holds no key")
    return lines


def read_key_file(path: Path) -> tuple[str, ...]:
    """Keys one per line (each may be followed by `rpm=N tpm=N`); blank lines and `#` comments
    skipped."""
    return tuple(words[0] for words in _key_lines(path))


def key_file_limits(files: Iterable[Path], default: RateLimit) -> dict[str, RateLimit]:
    """Each key that its line gives limits for -> `default` with those limits applied."""
    limits: dict[str, RateLimit] = {}
    for path in files:
        for number, words in enumerate(_key_lines(path), start=1):
            if len(words) > 1:
                where = f"key file {path} line {number}"
                try:
                    limits[words[0]] = parse_limit(words[1:], default, where)
                except RateLimitSyntaxError as exc:
                    raise ExposureError(str(exc)) from exc
    return limits


def keys_from(files: Iterable[Path], env: Mapping[str, str], variable: str) -> tuple[str, ...]:
    """Keys from the files, then the comma-separated environment variable; duplicates once."""
    keys = [key for path in files for key in read_key_file(path)]
    keys += [key.strip() for key in env.get(variable, "").split(",") if key.strip()]
    return tuple(dict.fromkeys(keys))


def read_pem(path: Path | None, what: str) -> bytes | None:
    """A PEM file's bytes (None when not configured); ExposureError names it when unreadable."""
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ExposureError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc
    if b"-----BEGIN" not in data:
        raise ExposureError(f"the {what} {path} is not PEM")
    return data


def check_tls_pair(cert: Path | None, key: Path | None, what: str) -> None:
    if (cert is None) != (key is None):
        raise ExposureError(f"{what}: give both the certificate and its private key")
