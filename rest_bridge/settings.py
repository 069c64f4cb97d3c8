"""Typed, immutable settings of the bridge, built once in main() and passed in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from minerva.v1.ratelimit import RateLimit

MIB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Where the bridge listens, where the core is, and which keys and limits apply."""

    host: str = "127.0.0.1"
    port: int = 8000
    # More (host, port) pairs served alike (e.g. Ollama's 127.0.0.1:11434).
    extra_listen: tuple[tuple[str, int], ...] = ()
    core_address: str = "127.0.0.1:50051"
    # repr=False keeps keys out of any log line that prints the settings.
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    core_api_key: str | None = field(default=None, repr=False)
    # Admin callers (model administration); their core calls use core_admin_key.
    admin_keys: tuple[str, ...] = field(default=(), repr=False)
    core_admin_key: str | None = field(default=None, repr=False)
    max_body_mb: int = 16
    # On SIGTERM: seconds for requests in flight to finish while new ones get 503.
    shutdown_grace_s: float = 10.0
    # HTTPS with this PEM certificate and key.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # TLS to the core: trust this CA; with a client certificate and key, mutual TLS.
    core_tls_ca: Path | None = None
    core_tls_cert: Path | None = None
    core_tls_key: Path | None = None
    # Ollama routes: keep-alive of a request that names none, in seconds (Ollama's
    # OLLAMA_KEEP_ALIVE, 5 minutes; negative: forever). OpenAI routes send none.
    ollama_keep_alive_s: float = 300.0

    # Per caller (API key, or client address without keys), requests and tokens per minute;
    # None is no limit. Key files may give a key its own (`KEY rpm=N tpm=N`).
    rate_limit: RateLimit = field(default_factory=RateLimit)
    key_rate_limits: tuple[tuple[str, RateLimit], ...] = field(default=(), repr=False)

    @property
    def max_body_bytes(self) -> int:
        return self.max_body_mb * MIB


def parse_host_port(value: str) -> tuple[str, int]:
    """Splits "HOST:PORT" (IPv6 hosts in brackets); raises ValueError when malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)
