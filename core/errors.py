"""Domain errors of the core; core/services/status.py maps each to one gRPC status code."""

from __future__ import annotations

from collections.abc import Mapping


class MinervaError(Exception):
    """Base of every error the core raises on purpose; the message is safe to show clients."""

    def __init__(
        self, message: str, *, param: str | None = None, facts: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        # The request field at fault (e.g. "sampling.temperature"), for clients to point at.
        self.param = param
        # More for clients, sent as trailing metadata (e.g. a rate limit's retry-after).
        self.facts: Mapping[str, str] = facts or {}


class ModelNotFound(MinervaError):
    """No model is registered under the requested id."""


class InvalidModelFile(MinervaError):
    """A model file's headers are malformed or hostile (bad magic, truncation, absurd sizes)."""


class ModelLoadError(MinervaError):
    """A model's weights could not be loaded into an engine."""


class UnsupportedModel(MinervaError):
    """No engine serves this model: its format, architecture or tokenizer is not supported."""


class InsufficientStorage(MinervaError):
    """Not enough disk space to write a converted model; retry once space is freed."""


class InvalidRequest(MinervaError):
    """A request field is missing, out of range, or cannot be processed (bad template, too long)."""


class Overloaded(MinervaError):
    """The model's wait queue is full; the client should retry later."""


class RateLimited(MinervaError):
    """The caller used up its requests or tokens per minute; `facts` say when to retry."""


class ModelBusy(MinervaError):
    """The operation conflicts with requests in flight (e.g. unloading a model in use)."""


class ShuttingDown(MinervaError):
    """The server is draining and takes no new work."""


class Unauthenticated(MinervaError):
    """An API key is required and was missing or wrong."""


class PermissionDenied(MinervaError):
    """The key is valid but may not do this (model administration needs an admin key)."""


class ConfigError(MinervaError):
    """The server's configuration is invalid; raised at startup, never to clients."""
