"""`python -m core`: run the Minerva gRPC core."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

from minerva.v1 import request_ids
from minerva.v1.exposure import (
    ALLOW_FLAG,
    ExposureError,
    check_exposure,
    check_tls_pair,
    key_file_limits,
    keys_from,
    listen_host,
    read_pem,
)

from core.engine.types import FlashAttention
from core.errors import ConfigError
from core.server import serve
from core.settings import DEFAULT_LISTEN, ImportType, Settings, load_config


def parse_args(argv: list[str]) -> argparse.Namespace:
    # No abbreviations: `--api-key K` must not pass for `--api-key-file K`.
    p = argparse.ArgumentParser(
        prog="python -m core", description="Minerva gRPC core", allow_abbrev=False
    )
    p.add_argument("--config", type=Path, help="TOML config file ([server] and [[models]] tables)")
    p.add_argument(
        "--models-dir", type=Path, help="directory scanned for *.gguf / SafeTensors models"
    )
    p.add_argument("--listen", help=f"host:port (default {DEFAULT_LISTEN})")
    p.add_argument(
        "--allowed-root",
        type=Path,
        action="append",
        default=[],
        help="directory model files may resolve under, beside --models-dir (repeatable; "
        "symlinks in the models directory and configured paths are checked against these)",
    )
    p.add_argument(
        "--api-key-file",
        type=Path,
        action="append",
        default=[],
        help="file of accepted API keys, one per line (repeatable; also MINERVA_API_KEYS=a,b)",
    )
    p.add_argument(
        "--admin-key-file",
        type=Path,
        action="append",
        default=[],
        help="file of admin keys, one per line (also MINERVA_ADMIN_KEYS=a,b): when set, "
        "LoadModel, UnloadModel and keep-alive unloads need one",
    )
    p.add_argument(
        "--max-tokens-cap",
        type=int,
        help="most tokens one request may ask for (more is refused; unset max_tokens means this)",
    )
    p.add_argument(
        "--max-generation-s",
        type=float,
        help="most seconds one request may generate; then it ends with finish_reason length",
    )
    p.add_argument(
        "--rate-limit-rpm",
        type=int,
        help="requests per minute per API key (per client address without keys); a key file "
        "line `KEY rpm=N tpm=N` sets a key's own (default: no limit)",
    )
    p.add_argument(
        "--rate-limit-tpm",
        type=int,
        help="tokens (prompt + completion) per minute per API key or client address",
    )
    p.add_argument("--tls-cert", type=Path, help="serve gRPC over TLS with this PEM certificate")
    p.add_argument("--tls-key", type=Path, help="the TLS certificate's PEM private key")
    p.add_argument(
        "--tls-client-ca",
        type=Path,
        help="PEM CA: require client certificates it signed (mutual TLS)",
    )
    p.add_argument(
        ALLOW_FLAG,
        action="store_true",
        help="serve a non-loopback --listen address without API keys",
    )
    p.add_argument("--queue-size", type=int, help="requests that may wait per model (default 16)")
    p.add_argument(
        "--context-size", type=int, help="default per-sequence context cap (default 8192)"
    )
    p.add_argument(
        "--slots",
        type=int,
        help="sequences generated at once per model (default: 8 up to 8k context, fewer above)",
    )
    p.add_argument(
        "--kv-cache-tokens",
        type=int,
        help="KV cache cells per model, shared by its slots (default: context x min(slots, 4))",
    )
    p.add_argument(
        "--prompt-cache-mb",
        type=int,
        help="host RAM per model for KV prefixes of evicted slots (default 256; 0 = off)",
    )
    p.add_argument("--threads", type=int, help="CPU threads per model (default: all cores)")
    p.add_argument(
        "--n-gpu-layers", type=int, help="layers to offload to a GPU (-1 = all; default 0)"
    )
    p.add_argument(
        "--flash-attn",
        choices=[f.value for f in FlashAttention],
        help="flash-attention kernels (default auto: llama.cpp decides on a GPU, off on the CPU)",
    )
    p.add_argument("--memory-budget-mb", type=int, help="memory for loaded models (default 8192)")
    p.add_argument(
        "--idle-ttl", type=float, help="unload models idle this many seconds (0 = never)"
    )
    p.add_argument("--max-message-mb", type=int, help="largest gRPC message (default 16)")
    p.add_argument(
        "--import-cache-dir",
        type=Path,
        help="where SafeTensors models are converted to GGUF (default <models-dir>/.cache/gguf)",
    )
    p.add_argument(
        "--import-type",
        choices=[t.value for t in ImportType],
        help="GGUF type of imported SafeTensors weights (default f16)",
    )
    p.add_argument("--shutdown-grace", type=float, help="seconds to drain on SIGTERM (default 10)")
    p.add_argument("--log-level", default=os.environ.get("MINERVA_LOG_LEVEL", "INFO"))
    p.add_argument(
        "--log-format",
        choices=request_ids.LOG_FORMATS,
        default="text",
        help="text, or json (one object per line); both carry request ids",
    )
    return p.parse_args(argv)


def build_settings(args: argparse.Namespace, env: dict[str, str]) -> Settings:
    fields = load_config(args.config) if args.config else {}
    settings = Settings(**fields)
    overrides = {
        "listen": args.listen,
        "models_dir": args.models_dir,
        "queue_size": args.queue_size,
        "default_context_size": args.context_size,
        "slots": args.slots,
        "kv_cache_tokens": args.kv_cache_tokens,
        "prompt_cache_mb": args.prompt_cache_mb,
        "threads": args.threads,
        "n_gpu_layers": args.n_gpu_layers,
        "memory_budget_mb": args.memory_budget_mb,
        "idle_ttl_s": args.idle_ttl,
        "max_message_mb": args.max_message_mb,
        "shutdown_grace_s": args.shutdown_grace,
        "import_cache_dir": args.import_cache_dir,
        "max_tokens_cap": args.max_tokens_cap,
        "max_generation_s": args.max_generation_s,
        "rate_limit_rpm": args.rate_limit_rpm,
        "rate_limit_tpm": args.rate_limit_tpm,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "tls_client_ca": args.tls_client_ca,
        "import_type": ImportType(args.import_type) if args.import_type else None,
        "flash_attn": FlashAttention(args.flash_attn) if args.flash_attn else None,
    }
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    if args.allowed_root:
        roots = (*settings.allowed_roots, *(p.resolve() for p in args.allowed_root))
        settings = replace(settings, allowed_roots=roots)
    try:
        keys = keys_from(args.api_key_file, env, "MINERVA_API_KEYS")
        if keys:
            settings = replace(settings, api_keys=keys)
        admin = keys_from(args.admin_key_file, env, "MINERVA_ADMIN_KEYS")
        if admin:
            settings = replace(settings, admin_keys=admin)
        files = [*args.api_key_file, *args.admin_key_file]
        own = key_file_limits(files, settings.rate_limit)
        settings = replace(settings, key_rate_limits=tuple(own.items()))
        check_tls_pair(settings.tls_cert, settings.tls_key, "--tls-cert/--tls-key")
        if settings.tls_client_ca and not settings.tls_cert:
            raise ExposureError("--tls-client-ca needs --tls-cert and --tls-key")
        read_pem(settings.tls_cert, "TLS certificate")
        read_pem(settings.tls_key, "TLS private key")
        read_pem(settings.tls_client_ca, "TLS client CA")
        check_exposure(
            "core",
            [listen_host(settings.listen)],
            # Mutual TLS authenticates callers too.
            bool(settings.api_keys or settings.admin_keys or settings.tls_client_ca),
            args.allow_unauthenticated,
        )
    except ExposureError as exc:
        raise ConfigError(str(exc)) from exc
    if settings.models_dir is None and not settings.models:
        raise ConfigError("no models: pass --models-dir and/or --config with [[models]] entries")
    return settings


async def _main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    request_ids.configure_logging(args.log_level, args.log_format)
    try:
        settings = build_settings(args, dict(os.environ))
        asyncio.run(_main(settings))
    except ConfigError as exc:
        logging.getLogger("core").error("%s", exc.message)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
