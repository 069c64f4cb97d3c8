"""`minerva` (or `python -m core.cli`): serve, list models, check model files, load a model."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

import grpc
from minerva.v1.exposure import ExposureError

from core.cli import serve
from core.cli.check import check_paths
from core.cli.connection import add_core_flags, client_settings
from core.cli.load import load_model
from core.cli.models import list_models
from rest_bridge.core_client import connect

# Exit codes: 1 = the core or a model file said no; 2 = bad usage or unreadable key/TLS files.
EXIT_FAILED = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations: `--core-api-key K` must not pass for `--core-api-key-file K`.
    parser = argparse.ArgumentParser(prog="minerva", description=__doc__, allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_serve_flags(
        sub.add_parser(
            "serve",
            allow_abbrev=False,
            help="run the core and the bridge (unknown flags go to the core)",
        )
    )
    models = sub.add_parser("models", allow_abbrev=False, help="list the core's models")
    models.add_argument(
        "--compact", action="store_true", help="MODEL|QUANT|SIZE_MB|TENSORS|LAYERS|VOCAB lines"
    )
    add_core_flags(models)
    check = sub.add_parser(
        "check", allow_abbrev=False, help="validate model files from their headers, no server"
    )
    check.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    load = sub.add_parser("load", allow_abbrev=False, help="load a model, showing its progress")
    load.add_argument("model", metavar="MODEL", help="model id (see `minerva models`)")
    add_core_flags(load)
    return parser


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """The arguments, plus the flags `serve` passes on to the core (none for other commands)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "serve":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args, extra


async def run_remote(
    args: argparse.Namespace, env: Mapping[str, str], out: TextIO, err: TextIO
) -> int:
    """`models` and `load`: one channel to the core; a gRPC error is one line on `err`."""
    try:
        client = connect(client_settings(args, env))  # reads the key and TLS files
    except ExposureError as exc:
        err.write(f"minerva: {exc}\n")
        return EXIT_USAGE
    try:
        if args.command == "models":
            out.write(await list_models(client, args.compact))
        else:
            await load_model(client, args.model, out, out.isatty())
    except grpc.aio.AioRpcError as exc:
        err.write(f"minerva: {exc.code().name}: {exc.details()}\n")
        return EXIT_FAILED
    finally:
        await client.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "serve":
        return serve.run(args, extra)
    if args.command == "check":
        lines, code = check_paths(args.paths)
        sys.stdout.write("".join(f"{line}\n" for line in lines))  # the command's output
        return code
    return asyncio.run(run_remote(args, os.environ, sys.stdout, sys.stderr))


if __name__ == "__main__":
    sys.exit(main())
