"""One model's runtime state in the manager (core.manager): its engine, load and close tasks,
leases, load failure, keep-alive and context wishes; the relay of its load progress to callers."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

from core.engine.base import Engine
from core.engine.types import LoadProgress, LoadStage
from core.engine_factory import Sizing
from core.errors import MinervaError
from core.keep_alive import KeepAlive
from core.registry import ModelSpec, fingerprint

log = logging.getLogger("core.manager")


class LoadState(enum.Enum):
    """Whether a model is in memory (ModelInfo.load_state)."""

    UNLOADED = "unloaded"
    LOADING = "loading"
    LOADED = "loaded"
    FAILED = "failed"  # its last load failed; retried once its file or configuration changes


@dataclass(eq=False)
class Slot:
    """One model's runtime state."""

    spec: ModelSpec
    engine: Engine | None = None
    loading: asyncio.Task[Engine] | None = None
    # The engine being freed: its memory stays counted, and a new load waits for it.
    closing: asyncio.Task[None] | None = None
    listeners: list[asyncio.Queue[LoadProgress]] = field(default_factory=list)
    error: str = ""
    leases: int = 0
    last_used: float = field(default_factory=time.monotonic)
    estimate: int = 0
    fingerprint: str = ""
    # The last load's error and the file it was tried on; answered again until the file changes.
    failure: MinervaError | None = None
    failed_file: str = ""
    # What the last request that said so asked for (core.keep_alive); None: the server's TTL.
    keep_alive: KeepAlive = None
    # The context size the last request that said so asked for (Ollama's num_ctx, clamped);
    # the next load takes it. None: the configured size.
    context: int | None = None
    # The loaded engine's sizing, and the context it was asked to load with.
    sizing: Sizing | None = None
    loaded_context: int | None = None
    # Leases holding the engine now (leases also counts those waiting for a load).
    holders: int = 0
    released: asyncio.Event = field(default_factory=asyncio.Event)
    # Waits for the holders to finish, then frees the engine so it reloads with `context`.
    draining: asyncio.Task[None] | None = None

    @property
    def holds_memory(self) -> bool:
        return self.engine is not None or pending(self.closing)

    def serves(self, want: int | None) -> bool:
        """Whether the loaded engine serves a request that wants context `want`."""
        if want is None or want == self.loaded_context:
            return True
        return self.sizing is not None and self.sizing.context_size == want

    async def until_released(self, engine: Engine) -> None:
        """Until no lease holds `engine` and it runs nothing (or it was freed meanwhile)."""
        while self.engine is engine and (self.holders or engine.busy):
            self.released.clear()
            # engine.busy has no event of its own: look again shortly.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.released.wait(), 0.05)

    @property
    def state(self) -> LoadState:
        if self.engine is not None:
            return LoadState.LOADED
        if self.loading is not None:
            return LoadState.LOADING
        return LoadState.FAILED if self.error else LoadState.UNLOADED


async def relay_progress(slot: Slot, loading: Awaitable[Engine]) -> AsyncIterator[LoadProgress]:
    """The slot's load progress while `loading` runs, then READY (or its error)."""
    events: asyncio.Queue[LoadProgress] = asyncio.Queue()
    slot.listeners.append(events)
    task = asyncio.ensure_future(loading)
    # Retrieved here when this caller goes away early; the shared load goes on regardless.
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    getter: asyncio.Future[LoadProgress] | None = None
    try:
        while not task.done():
            getter = asyncio.ensure_future(events.get())
            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield getter.result()
        while not events.empty():
            yield events.get_nowait()
        task.result()
        yield LoadProgress(LoadStage.READY, 1.0, "loaded")
    finally:
        if getter is not None:
            getter.cancel()
        slot.listeners.remove(events)


def log_reload_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("freeing a model for its reload failed", exc_info=task.exception())


def pending(task: asyncio.Task[None] | None) -> TypeGuard[asyncio.Task[None]]:
    return task is not None and not task.done()


def file_identity(path: Path) -> str:
    """The file's fingerprint, or "" when it cannot be read (so one appearing is a change)."""
    try:
        return fingerprint(path)
    except OSError:
        return ""


def fresh_error(error: MinervaError) -> MinervaError:
    # A fresh exception each time: re-raising one object would grow its traceback per request.
    return type(error)(error.message, param=error.param)
