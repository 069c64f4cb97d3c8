"""Loaded models: lazy single-flight loading, LRU eviction under a memory budget, idle TTL, pinning."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable

from core.engine.base import Engine
from core.engine.types import EngineStats, LoadProgress, LoadStage
from core.engine_factory import EngineFactory, Sizing
from core.errors import (
    InsufficientStorage,
    MinervaError,
    ModelBusy,
    ModelLoadError,
    Overloaded,
    ShuttingDown,
    UnsupportedModel,
)
from core.keep_alive import UNCHANGED, Default, KeepAlive, idle_ttl, reap_interval
from core.metadata.types import HeaderInfo
from core.model_slot import (
    LoadState,
    Slot,
    file_identity,
    fresh_error,
    log_reload_failure,
    pending,
    relay_progress,
)
from core.registry import ModelSpec, Registry, fingerprint

log = logging.getLogger(__name__)

# Told each model's new load state: (model id, state).
StateListener = Callable[[str, LoadState], None]

# Refusals for now, not verdicts on the model: never remembered as its load failure.
_RETRYABLE = (Overloaded, ShuttingDown, InsufficientStorage)


class ModelManager:
    """Owns every loaded engine; the only place that loads or frees one."""

    def __init__(
        self,
        registry: Registry,
        factory: EngineFactory,
        *,
        memory_budget_bytes: int,
        idle_ttl_s: float,
        on_state: StateListener | None = None,
    ) -> None:
        self._registry = registry
        self._factory = factory
        self._budget = memory_budget_bytes
        self._ttl = idle_ttl_s
        self._on_state = on_state or (lambda _id, _state: None)
        self._slots: dict[str, Slot] = {}
        self._lock = asyncio.Lock()  # guards budget decisions: evict-then-start-load
        self._reaps: set[asyncio.Task[list[str]]] = set()
        self._reaper_wake = asyncio.Event()

    def _slot(self, model_id: str) -> Slot:
        spec = self._registry.get(model_id)
        slot = self._slots.get(model_id)
        idle = slot is not None and slot.engine is None and slot.loading is None and not slot.leases
        # A changed spec (file replaced, config edited) applies once the old model is unloaded.
        if slot is None:
            slot = self._slots[model_id] = Slot(spec)
        elif slot.spec != spec and idle:
            # An engine still closing is carried over: its memory is not free yet.
            new = Slot(spec, closing=slot.closing, estimate=slot.estimate)
            slot = self._slots[model_id] = new
        return slot

    def fingerprint(self, model_id: str) -> str:
        """The fingerprint of the file the loaded model came from ("" when not loaded)."""
        slot = self._slots.get(model_id)
        return slot.fingerprint if slot else ""

    def stats(self, model_id: str) -> EngineStats | None:
        """The loaded engine's counters; None when the model is not loaded."""
        slot = self._slots.get(model_id)
        return slot.engine.stats() if slot is not None and slot.engine is not None else None

    def threads(self, model_id: str) -> int | None:
        """CPU threads the loaded engine computes with; None when the model is not loaded."""
        slot = self._slots.get(model_id)
        return slot.engine.threads if slot is not None and slot.engine is not None else None

    def set_threads(self, model_id: str, threads: int) -> None:
        """Have the loaded engine compute with `threads` (clamped); nothing when not loaded."""
        slot = self._slots.get(model_id)
        if slot is not None and slot.engine is not None:
            slot.engine.set_threads(threads)

    def state(self, model_id: str) -> tuple[LoadState, str]:
        """(load state, last error) without loading anything."""
        slot = self._slots.get(model_id)
        return (slot.state, slot.error) if slot else (LoadState.UNLOADED, "")

    @contextlib.asynccontextmanager
    async def lease(
        self,
        model_id: str,
        keep_alive: KeepAlive | Default = UNCHANGED,
        context_size: int | None = None,
    ) -> AsyncIterator[Engine]:
        """The model's engine, loaded on first use, kept from eviction while the lease is held.
        `keep_alive` (from a request) sets how long it stays loaded once idle; `context_size`
        (Ollama's num_ctx) loads it with that context, reloading it once idle if it differs."""
        slot = self._slot(model_id)
        slot.leases += 1
        if not isinstance(keep_alive, Default):
            slot.keep_alive = keep_alive
            self._reaper_wake.set()  # the reaper may need to look sooner
        try:
            want = await self._wanted_context(slot, context_size)
            engine = await self._acquire(slot, want)
            slot.holders += 1  # no await since _acquire checked the engine
            try:
                slot.last_used = time.monotonic()
                yield engine
            finally:
                slot.holders -= 1
                if slot.holders == 0:
                    slot.released.set()
        finally:
            slot.leases -= 1
            slot.last_used = time.monotonic()
            if slot.leases == 0 and self._ttl_of(slot) == 0:
                self._spawn_reap()

    def _ttl_of(self, slot: Slot) -> float:
        return math.inf if slot.spec.pinned else idle_ttl(slot.keep_alive, self._ttl)

    def _spawn_reap(self) -> None:
        """Unload what keep_alive 0 released, soon, outside the request that released it."""
        task = asyncio.ensure_future(self.reap_idle())
        self._reaps.add(task)
        task.add_done_callback(self._reaps.discard)

    def expires_at(self, model_id: str) -> float | None:
        """When the loaded model will be unloaded if it stays idle (Unix time, counted from now
        while in use); None when it is not loaded or never expires."""
        slot = self._slots.get(model_id)
        if slot is None or slot.engine is None:
            return None
        ttl = self._ttl_of(slot)
        if not math.isfinite(ttl):
            return None
        in_use = slot.leases > 0 or slot.engine.busy
        idle_since = time.monotonic() if in_use else slot.last_used
        return time.time() + (idle_since + ttl - time.monotonic())

    def sizing(self, spec: ModelSpec, header: HeaderInfo) -> Sizing:
        """The loaded model's sizing; when not loaded, the sizing its next load takes."""
        slot = self._slots.get(spec.id)
        if slot is not None and slot.engine is not None and slot.sizing is not None:
            return slot.sizing
        return self._factory.sizing(spec, header, slot.context if slot else None)

    def memory_bytes(self, model_id: str) -> int:
        """Memory the loaded model holds (its estimate: weights, KV cache, prompt cache)."""
        slot = self._slots.get(model_id)
        return slot.estimate if slot is not None and slot.engine is not None else 0

    async def load(
        self,
        model_id: str,
        keep_alive: KeepAlive | Default = UNCHANGED,
        context_size: int | None = None,
    ) -> AsyncIterator[LoadProgress]:
        """Load (or join the load of) a model, yielding progress, ending with a "ready" event;
        with `context_size`, a copy loaded with another context reloads once idle.

        A model whose load failed fails again at once, with the same error, until its file or
        its configuration changes (or the server restarts): an unchanged file would fail again.
        """
        slot = self._slot(model_id)
        if not isinstance(keep_alive, Default):
            slot.keep_alive = keep_alive
            slot.last_used = time.monotonic()
            self._reaper_wake.set()
        want = await self._wanted_context(slot, context_size)
        if slot.engine is not None and not pending(slot.draining) and slot.serves(want):
            yield LoadProgress(LoadStage.READY, 1.0, "already loaded")
            return
        async for event in relay_progress(slot, self._acquire(slot, want)):
            yield event

    async def _wanted_context(self, slot: Slot, requested: int | None) -> int | None:
        """The context size to serve a request that asked for `requested` (clamped to the
        model's trained context); INVALID_ARGUMENT when it alone would overflow the budget."""
        if requested is None:
            return None
        header = await asyncio.to_thread(self._registry.header, slot.spec)
        return self._factory.requested_context(slot.spec, header, requested, self._budget)

    async def _acquire(self, slot: Slot, want: int | None) -> Engine:
        """The engine once it serves `want`: a copy loaded with another context is freed when
        the requests holding it finish (they are never cut short), then loaded again."""
        while True:
            if pending(slot.draining):  # requests arriving meanwhile wait for the new copy
                await asyncio.wait({slot.draining})
                continue
            engine = await self._ensure_loaded(slot, want)
            if slot.engine is not engine:  # freed while this caller waited
                continue
            if slot.serves(want):
                return engine
            slot.context = want  # what the next load takes, whoever starts it
            slot.draining = asyncio.ensure_future(self._drain(slot, engine, want))
            slot.draining.add_done_callback(log_reload_failure)

    async def _drain(self, slot: Slot, engine: Engine, want: int | None) -> None:
        log.info(
            "model %s: reloading with a context of %s tokens once its %d request(s) finish",
            slot.spec.id,
            want,
            slot.holders,
        )
        await slot.until_released(engine)
        if slot.engine is engine:
            await self._free(slot)

    async def _ensure_loaded(self, slot: Slot, want: int | None = None) -> Engine:
        if slot.engine is not None:
            return slot.engine
        if slot.loading is None:
            if want is not None:
                slot.context = want  # from now on, loads take it until another request asks
            slot.loading = asyncio.ensure_future(self._load(slot, slot.context))
            slot.loading.add_done_callback(lambda _t: setattr(slot, "loading", None))
        # shield: one caller giving up must not abort the load the others wait for.
        return await asyncio.shield(slot.loading)

    def _broadcast(self, slot: Slot, event: LoadProgress) -> None:
        for queue in slot.listeners:
            queue.put_nowait(event)

    async def _load(self, slot: Slot, context: int | None) -> Engine:
        spec = slot.spec
        # A failure is remembered per file and context size: another size may load.
        tried_on = f"{await self._before_load(slot, context)}#{context}"
        try:
            refusal = self._factory.refusal(spec)
            if refusal is not None:  # before evicting anything for it
                raise UnsupportedModel(refusal)
            # A SafeTensors checkpoint is converted first: disk work, no memory budget needed.
            load_spec = await self._factory.prepare(spec, self._progress_sink(slot))
            self._broadcast(slot, LoadProgress(LoadStage.QUEUED, 0.0, "waiting for memory"))
            async with self._lock:
                engine = await self._load_locked(slot, load_spec, context)
        except MinervaError as exc:
            self._failed(slot, exc.message, exc, tried_on)
            raise
        except Exception as exc:
            reason = f"load failed: {exc}"
            error = ModelLoadError(f"model {spec.id!r}: {reason}")
            self._failed(slot, reason, error, tried_on)
            raise error from exc
        log.info("model %s loaded (%.0f MB)", spec.id, engine.memory_bytes / 2**20)
        self._reaper_wake.set()  # its TTL may be the shortest now
        self._on_state(spec.id, LoadState.LOADED)
        return engine

    async def _before_load(self, slot: Slot, context: int | None) -> str:
        """The identity of the file to try; a remembered failure on it is raised again at once."""
        tried_on = await asyncio.to_thread(file_identity, slot.spec.path)
        if slot.failure is not None and slot.failed_file == f"{tried_on}#{context}":
            raise fresh_error(slot.failure)
        if slot.closing is not None:
            # The previous copy must be gone before this one takes its memory again.
            await asyncio.wait({slot.closing})
        return tried_on

    def _progress_sink(self, slot: Slot) -> Callable[[LoadProgress], None]:
        loop = asyncio.get_running_loop()

        def progress(event: LoadProgress) -> None:  # called on the loading thread
            loop.call_soon_threadsafe(self._broadcast, slot, event)

        return progress

    async def _load_locked(self, slot: Slot, spec: ModelSpec, context: int | None) -> Engine:
        """Load `spec` (the slot's own, or the GGUF its checkpoint was converted to)."""
        # Header and fingerprint come from the file now: a file replaced later keeps them.
        header = await asyncio.to_thread(self._registry.header, spec)
        slot.fingerprint = await asyncio.to_thread(fingerprint, slot.spec.path)
        slot.estimate = self._factory.estimate_bytes(spec, header, context)
        await self._make_room(slot)
        self._on_state(spec.id, LoadState.LOADING)
        progress = self._progress_sink(slot)
        slot.engine = await self._factory.load(spec, header, progress, context)
        slot.sizing, slot.loaded_context = self._factory.sizing(spec, header, context), context
        slot.error, slot.failure = "", None
        return slot.engine

    def _failed(self, slot: Slot, reason: str, error: MinervaError, tried_on: str) -> None:
        slot.error = reason
        if not isinstance(error, _RETRYABLE):
            slot.failure, slot.failed_file = error, tried_on
        self._on_state(slot.spec.id, LoadState.FAILED)
        log.warning("model %s failed to load: %s", slot.spec.id, reason)

    def _used_bytes(self) -> int:
        return sum(s.estimate for s in self._slots.values() if s.holds_memory)

    def _closing(self) -> set[asyncio.Task[None]]:
        return {s.closing for s in self._slots.values() if pending(s.closing)}

    async def _make_room(self, incoming: Slot) -> None:
        """Evict least recently used idle, unpinned models until the incoming one fits."""
        while self._used_bytes() + incoming.estimate > self._budget:
            closing = self._closing()
            if closing:  # memory on its way back: wait for it before evicting anything more
                await asyncio.wait(closing)
                continue
            victims = [
                s
                for s in self._slots.values()
                if s.engine is not None
                and not s.spec.pinned
                and s.leases == 0
                and not s.engine.busy
            ]
            if not victims:
                if self._used_bytes() == 0:
                    return  # a model larger than the budget may still load alone
                raise Overloaded(
                    f"memory budget of {self._budget // 2**20} MB is taken by models in use or pinned; "
                    f"cannot load {incoming.spec.id!r} now"
                )
            victim = min(victims, key=lambda s: s.last_used)
            log.info(
                "evicting %s (least recently used) to load %s", victim.spec.id, incoming.spec.id
            )
            await self._free(victim)

    async def unload(self, model_id: str) -> bool:
        """Free a loaded model; False when it was not loaded."""
        slot = self._slot(model_id)
        if slot.engine is None:
            return False
        if slot.leases > 0 or slot.engine.busy:
            raise ModelBusy(f"model {model_id!r} is serving requests; try again when they finish")
        await self._free(slot)
        return True

    async def _free(self, slot: Slot) -> None:
        engine, slot.engine = slot.engine, None
        if engine is not None:
            slot.closing = asyncio.ensure_future(self._close(slot.spec.id, engine))
        if pending(slot.closing):
            # shield: a caller that gives up must not leave the engine half closed.
            await asyncio.shield(slot.closing)

    async def _close(self, model_id: str, engine: Engine) -> None:
        await engine.close()
        self._on_state(model_id, LoadState.UNLOADED)

    async def load_pinned(self) -> None:
        """Load pinned models; one that fails is reported and left failed, the rest still load."""
        for spec in self._registry.specs():
            if not spec.pinned:
                continue
            try:
                async with self.lease(spec.id):
                    pass
            except MinervaError as exc:
                log.error("pinned model %s did not load: %s", spec.id, exc.message)

    async def reap_idle(self) -> list[str]:
        """Unload models idle at least their TTL (never pinned or busy ones)."""
        now, freed = time.monotonic(), []
        for slot in list(self._slots.values()):
            idle = slot.engine is not None and slot.leases == 0 and not slot.engine.busy
            if idle and now - slot.last_used >= self._ttl_of(slot):
                await self._free(slot)
                freed.append(slot.spec.id)
                log.info("unloaded %s after %.1f s idle", slot.spec.id, now - slot.last_used)
        return freed

    async def run_reaper(self) -> None:
        while True:
            loaded = [s for s in self._slots.values() if s.engine is not None]
            interval = reap_interval([self._ttl_of(s) for s in loaded])
            self._reaper_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reaper_wake.wait(), interval)
            await self.reap_idle()

    def abort_all(self) -> None:
        """Stop every generation in progress (shutdown grace period over)."""
        for slot in self._slots.values():
            if slot.engine is not None:
                slot.engine.abort()

    async def close(self) -> None:
        self._factory.cancel_imports()
        for slot in list(self._slots.values()):
            await self._free(slot)
