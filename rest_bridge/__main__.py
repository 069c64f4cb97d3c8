"""`python -m rest_bridge`: parse flags and environment, serve until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import signal
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path

from aiohttp import web
from minerva.v1 import request_ids
from minerva.v1.exposure import (
    ALLOW_FLAG,
    ExposureError,
    check_exposure,
    check_tls_pair,
    key_file_limits,
    keys_from,
    read_key_file,
    read_pem,
)
from minerva.v1.ratelimit import RateLimit

from rest_bridge.app import create_app
from rest_bridge.app_keys import DRAIN
from rest_bridge.errors import BadRequest
from rest_bridge.ollama.requests import parse_duration
from rest_bridge.routing import split_targets
from rest_bridge.settings import Settings, parse_host_port

log = logging.getLogger("rest_bridge")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    # No abbreviations: `--api-key K` must not pass for `--api-key-file K`.
    parser = argparse.ArgumentParser(prog="rest_bridge", description=__doc__, allow_abbrev=False)
    parser.add_argument("--listen", default="127.0.0.1:8000", help="HOST:PORT (port 0: any)")
    parser.add_argument(
        "--ollama-listen",
        default=None,
        help="also listen on HOST:PORT, e.g. 127.0.0.1:11434 where Ollama clients look first",
    )
    parser.add_argument(
        "--ollama-keep-alive",
        type=_duration,
        default=Settings.ollama_keep_alive_s,
        help="how long a model stays loaded after an Ollama request that names no keep_alive "
        "(seconds or a duration like 5m; negative: forever; default 5m, as Ollama's "
        "OLLAMA_KEEP_ALIVE)",
    )
    parser.add_argument(
        "--core",
        default="127.0.0.1:50051",
        help="the core's gRPC HOST:PORT; several cores as HOST:PORT,HOST:PORT (the bridge picks "
        "one per request by model, load and conversation); or one gRPC target such as "
        "dns:///minerva-core:50051 (gRPC round-robins over what it resolves to)",
    )
    parser.add_argument(
        "--api-key-file",
        type=Path,
        action="append",
        default=[],
        help="file of accepted client keys, one per line (repeatable; also MINERVA_API_KEYS=a,b)",
    )
    parser.add_argument(
        "--core-api-key-file",
        type=Path,
        default=None,
        help="file holding the key sent to the core (also MINERVA_CORE_API_KEY; default: the "
        "first client key)",
    )
    parser.add_argument(
        "--admin-key-file",
        type=Path,
        action="append",
        default=[],
        help="file of admin keys (also MINERVA_ADMIN_KEYS=a,b): their holders may administer "
        "models (Ollama keep-alive unloads, load/unload) when the core has admin keys",
    )
    parser.add_argument(
        "--core-admin-key-file",
        type=Path,
        default=None,
        help="file holding the core admin key sent for admin callers (also "
        "MINERVA_CORE_ADMIN_KEY; default: the first admin key)",
    )
    parser.add_argument("--tls-cert", type=Path, help="serve HTTPS with this PEM certificate")
    parser.add_argument("--tls-key", type=Path, help="the HTTPS certificate's PEM private key")
    parser.add_argument(
        "--core-tls-ca", type=Path, help="talk TLS to the core, trusting this PEM CA"
    )
    parser.add_argument(
        "--core-tls-cert", type=Path, help="client certificate for the core (mutual TLS)"
    )
    parser.add_argument("--core-tls-key", type=Path, help="the client certificate's private key")
    parser.add_argument(
        ALLOW_FLAG,
        action="store_true",
        help="serve a non-loopback --listen / --ollama-listen address without API keys",
    )
    parser.add_argument("--max-body-mb", type=int, default=16, help="request body limit (MiB)")
    parser.add_argument(
        "--shutdown-grace",
        type=float,
        default=10.0,
        help="seconds on SIGTERM for requests in flight to finish; new ones get 503 (default 10)",
    )
    parser.add_argument(
        "--rate-limit-rpm",
        type=_positive,
        help="requests per minute per API key (per client address without keys); a key file "
        "line `KEY rpm=N tpm=N` sets a key's own (default: no limit)",
    )
    parser.add_argument(
        "--rate-limit-tpm",
        type=_positive,
        help="tokens (prompt + completion) per minute per API key or client address",
    )
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--log-format",
        choices=request_ids.LOG_FORMATS,
        default="text",
        help="text, or json (one object per line); both carry request ids",
    )
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except BadRequest as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    if not math.isfinite(seconds):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite duration")
    return seconds


def build_settings(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    """Flags first, then the environment; keys from both are accepted."""
    host, port = parse_host_port(args.listen)
    split_targets(args.core)  # a malformed --core stops the bridge before it serves
    keys = keys_from(args.api_key_file, env, "MINERVA_API_KEYS")
    core_file = read_key_file(args.core_api_key_file)[0] if args.core_api_key_file else None
    core_key = core_file or env.get("MINERVA_CORE_API_KEY") or (keys[0] if keys else None)
    if args.max_body_mb < 1:
        raise SystemExit("--max-body-mb must be at least 1")
    extra = (parse_host_port(args.ollama_listen),) if args.ollama_listen else ()
    admin = keys_from(args.admin_key_file, env, "MINERVA_ADMIN_KEYS")
    core_admin_file = (
        read_key_file(args.core_admin_key_file)[0] if args.core_admin_key_file else None
    )
    core_admin = (
        core_admin_file or env.get("MINERVA_CORE_ADMIN_KEY") or (admin[0] if admin else None)
    )
    check_tls_pair(args.tls_cert, args.tls_key, "--tls-cert/--tls-key")
    check_tls_pair(args.core_tls_cert, args.core_tls_key, "--core-tls-cert/--core-tls-key")
    if args.core_tls_cert and not args.core_tls_ca:
        raise ExposureError(
            "--core-tls-cert needs --core-tls-ca (the CA of the core's certificate)"
        )
    for path, what in (
        (args.tls_cert, "TLS certificate"),
        (args.tls_key, "TLS private key"),
        (args.core_tls_ca, "core TLS CA"),
        (args.core_tls_cert, "core TLS client certificate"),
        (args.core_tls_key, "core TLS client key"),
    ):
        read_pem(path, what)  # a missing or wrong file stops the bridge before it serves
    rate_limit = RateLimit(args.rate_limit_rpm, args.rate_limit_tpm)
    own_limits = key_file_limits([*args.api_key_file, *args.admin_key_file], rate_limit)
    hosts = [host, *(h for h, _ in extra)]
    check_exposure("bridge", hosts, bool(keys or admin), args.allow_unauthenticated)
    return Settings(
        host=host,
        port=port,
        extra_listen=extra,
        core_address=args.core,
        api_keys=keys,
        core_api_key=core_key,
        admin_keys=admin,
        core_admin_key=core_admin,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        core_tls_ca=args.core_tls_ca,
        core_tls_cert=args.core_tls_cert,
        core_tls_key=args.core_tls_key,
        max_body_mb=args.max_body_mb,
        shutdown_grace_s=args.shutdown_grace,
        ollama_keep_alive_s=args.ollama_keep_alive,
        rate_limit=rate_limit,
        key_rate_limits=tuple(own_limits.items()),
    )


def https_context(settings: Settings) -> ssl.SSLContext | None:
    """The server TLS context when a certificate is configured (TLS 1.2 or newer)."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise SystemExit(f"rest_bridge: cannot load the TLS certificate or key: {exc}") from exc
    return context


async def serve(settings: Settings) -> None:
    # access_log=None: request_id_middleware writes the access log, with the request id.
    app = create_app(settings)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        ssl_context = https_context(settings)
        site = web.TCPSite(runner, settings.host, settings.port, ssl_context=ssl_context)
        await site.start()
        host, port = runner.addresses[0][:2]
        for extra_host, extra_port in settings.extra_listen:
            await web.TCPSite(runner, extra_host, extra_port, ssl_context=ssl_context).start()
            bound = runner.addresses[-1][:2]
            log.info("minerva bridge also listening on %s:%s (for Ollama clients)", *bound)
        log.info("cores at %s", ", ".join(split_targets(settings.core_address)))
        log.info("minerva bridge listening on %s:%s", host, port)
        await _wait_for_stop_signal()
        drain = app[DRAIN]
        drain.start()
        log.info(
            "minerva bridge draining: %d request(s) in flight, up to %.0f s",
            drain.in_flight,
            settings.shutdown_grace_s,
        )
        if not await drain.wait_idle(settings.shutdown_grace_s):
            log.warning("grace period over: cancelling %d request(s)", drain.in_flight)
        log.info("minerva bridge stopping")
    finally:
        await runner.cleanup()


async def _wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    request_ids.configure_logging(args.log_level, args.log_format)
    try:
        settings = build_settings(args, os.environ)
    except (ValueError, ExposureError) as error:
        raise SystemExit(f"rest_bridge: {error}") from error
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
