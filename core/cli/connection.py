"""How the `minerva` command reaches the core: the bridge's `--core*` flags and its channel.

The flags, environment variables and defaults are the bridge's (`python -m rest_bridge --help`),
and the channel is built by the bridge's own `connect()`, so TLS, message limits and reconnect
behave alike in both clients.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

from minerva.v1.exposure import ExposureError, check_tls_pair, keys_from, read_key_file

from rest_bridge.settings import Settings

DEFAULT_CORE = "127.0.0.1:50051"


def add_core_flags(parser: argparse.ArgumentParser) -> None:
    """The bridge's flags for talking to the core, with the same names and meaning."""
    parser.add_argument(
        "--core", default=DEFAULT_CORE, help="the core's gRPC target (HOST:PORT or dns:///...)"
    )
    parser.add_argument(
        "--core-api-key-file",
        type=Path,
        help="file holding the key sent to the core (also MINERVA_CORE_API_KEY; default: the "
        "first of MINERVA_API_KEYS)",
    )
    parser.add_argument(
        "--core-admin-key-file",
        type=Path,
        help="file holding a core admin key, sent instead of the client key (also "
        "MINERVA_CORE_ADMIN_KEY; default: the first of MINERVA_ADMIN_KEYS)",
    )
    parser.add_argument("--core-tls-ca", type=Path, help="talk TLS to the core, trusting this CA")
    parser.add_argument(
        "--core-tls-cert", type=Path, help="client certificate for the core (mutual TLS)"
    )
    parser.add_argument("--core-tls-key", type=Path, help="the client certificate's private key")


def _first_key(path: Path | None, env: Mapping[str, str], single: str, listed: str) -> str | None:
    """A key file's first key, else the single-key variable, else the first listed key."""
    if path is not None:
        return read_key_file(path)[0]
    listed_keys = keys_from((), env, listed)
    return env.get(single) or (listed_keys[0] if listed_keys else None)


def client_settings(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    """Bridge settings holding only what a client of the core needs; ExposureError when a key
    file is unreadable or the TLS flags do not pair up (connect() reads the TLS files). An
    admin key, when there is one, is sent alone: the core lets admin keys do everything client
    keys may."""
    check_tls_pair(args.core_tls_cert, args.core_tls_key, "--core-tls-cert/--core-tls-key")
    if args.core_tls_cert and not args.core_tls_ca:
        raise ExposureError(
            "--core-tls-cert needs --core-tls-ca (the CA of the core's certificate)"
        )
    admin = _first_key(
        args.core_admin_key_file, env, "MINERVA_CORE_ADMIN_KEY", "MINERVA_ADMIN_KEYS"
    )
    client = _first_key(args.core_api_key_file, env, "MINERVA_CORE_API_KEY", "MINERVA_API_KEYS")
    return Settings(
        core_address=args.core,
        core_api_key=admin or client,
        core_tls_ca=args.core_tls_ca,
        core_tls_cert=args.core_tls_cert,
        core_tls_key=args.core_tls_key,
    )
