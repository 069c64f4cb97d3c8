"""`python -m rest_bridge`: parse flags and environment, serve until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Mapping, Sequence

from aiohttp import web

from rest_bridge.app import create_app
from rest_bridge.settings import Settings, parse_host_port

log = logging.getLogger("rest_bridge")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="rest_bridge", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:8000", help="HOST:PORT (port 0: any)")
    parser.add_argument(
        "--ollama-listen",
        default=None,
        help="also listen on HOST:PORT, e.g. 127.0.0.1:11434 where Ollama clients look first",
    )
    parser.add_argument("--core", default="127.0.0.1:50051", help="the core's gRPC HOST:PORT")
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        help="accepted client key (repeatable; also MINERVA_API_KEYS=a,b)",
    )
    parser.add_argument(
        "--core-api-key",
        default=None,
        help="key sent to the core (also MINERVA_CORE_API_KEY; default: the first client key)",
    )
    parser.add_argument("--max-body-mb", type=int, default=16, help="request body limit (MiB)")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def build_settings(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    """Flags first, then the environment; keys from both are accepted."""
    host, port = parse_host_port(args.listen)
    env_keys = [key.strip() for key in env.get("MINERVA_API_KEYS", "").split(",") if key.strip()]
    keys = tuple(dict.fromkeys([*args.api_key, *env_keys]))
    core_key = args.core_api_key or env.get("MINERVA_CORE_API_KEY") or (keys[0] if keys else None)
    if args.max_body_mb < 1:
        raise SystemExit("--max-body-mb must be at least 1")
    extra = (parse_host_port(args.ollama_listen),) if args.ollama_listen else ()
    return Settings(
        host=host,
        port=port,
        extra_listen=extra,
        core_address=args.core,
        api_keys=keys,
        core_api_key=core_key,
        max_body_mb=args.max_body_mb,
    )


async def serve(settings: Settings) -> None:
    runner = web.AppRunner(create_app(settings), handler_cancellation=True)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        for extra_host, extra_port in settings.extra_listen:
            await web.TCPSite(runner, extra_host, extra_port).start()
            bound = runner.addresses[-1][:2]
            log.info("minerva bridge also listening on %s:%s (for Ollama clients)", *bound)
        log.info("core at %s", settings.core_address)
        log.info("minerva bridge listening on %s:%s", host, port)
        await _wait_for_stop_signal()
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
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = build_settings(args, os.environ)
    except ValueError as error:
        raise SystemExit(f"rest_bridge: {error}") from error
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
