"""ModelManager with a fake engine factory: loads wait for closes, and failed loads are remembered."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.engine_factory import EngineFactory, Sizing
from core.errors import InvalidModelFile, ModelLoadError, Overloaded
from core.manager import ModelManager
from core.model_slot import LoadState
from core.registry import ModelSpec, Registry
from core.settings import Settings
from tests.unit.conftest import write_tiny_gguf

MB = 2**20
# The fake models' configured and trained context sizes.
CONFIGURED, TRAINED = 2048, 8192


class FakeEngine:
    """Stands in for a loaded model; close() waits until the factory's release is set."""

    memory_bytes = MB
    busy = False

    def __init__(self, factory: FakeFactory, model_id: str) -> None:
        self._factory = factory
        self._id = model_id

    def abort(self) -> None:
        pass

    async def close(self) -> None:
        self._factory.log.append(f"close {self._id}")
        await self._factory.release.wait()
        self._factory.log.append(f"closed {self._id}")
        self._factory.alive -= 1


class FakeFactory:
    """Counts loads, records load/close order, and tracks how many engines are alive at once."""

    def __init__(self, estimate: int = 6 * MB) -> None:
        self.estimate = estimate
        self.error: Exception | None = None
        self.log: list[str] = []
        self.alive = 0
        self.most_alive = 0
        self.release = asyncio.Event()
        self.release.set()  # closes finish at once unless a test clears this

    def servable(self, spec: ModelSpec) -> bool:
        return True

    def refusal(self, spec: ModelSpec) -> str | None:
        return None

    async def prepare(self, spec: ModelSpec, progress: object) -> ModelSpec:
        return spec

    def cancel_imports(self) -> None:
        pass

    def context_size(self, spec: ModelSpec, header: object, requested: int | None = None) -> int:
        return min(requested, TRAINED) if requested else CONFIGURED

    def requested_context(
        self, spec: ModelSpec, header: object, requested: int, budget_bytes: int
    ) -> int:
        # The real rules (clamp, budget) over this fake's sizes.
        check = EngineFactory.requested_context
        return check(self, spec, header, requested, budget_bytes)  # type: ignore[arg-type]

    def sizing(self, spec: ModelSpec, header: object, requested: int | None = None) -> Sizing:
        context = self.context_size(spec, header, requested)
        return Sizing(context, 1, context)

    def estimate_bytes(self, spec: ModelSpec, header: object, requested: int | None = None) -> int:
        return self.estimate * self.context_size(spec, header, requested) // CONFIGURED

    async def load(
        self, spec: ModelSpec, header: object, progress: object, requested: int | None = None
    ) -> FakeEngine:
        context = self.context_size(spec, header, requested)
        self.log.append(f"load {spec.id}" + ("" if context == CONFIGURED else f" {context}"))
        await asyncio.sleep(0)  # a real load yields to the loop while its thread works
        if self.error is not None:
            raise self.error
        self.alive += 1
        self.most_alive = max(self.most_alive, self.alive)
        return FakeEngine(self, spec.id)

    @property
    def loads(self) -> int:
        return sum(entry.startswith("load ") for entry in self.log)


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    write_tiny_gguf(root / "a.gguf")
    write_tiny_gguf(root / "b.gguf")
    return root


def make_manager(models_dir: Path, factory: FakeFactory, budget: int = 10 * MB) -> ModelManager:
    registry = Registry(Settings(models_dir=models_dir, threads=1))
    return ModelManager(registry, factory, memory_budget_bytes=budget, idle_ttl_s=0)  # type: ignore[arg-type]


async def lease_once(manager: ModelManager, model_id: str, context_size: int | None = None) -> None:
    async with manager.lease(model_id, context_size=context_size):
        pass


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never became true")


def touch(path: Path) -> None:
    """Change the file's mtime, as replacing it would."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


async def test_a_lease_during_unload_loads_only_after_the_close(models_dir: Path) -> None:
    factory = FakeFactory()
    manager = make_manager(models_dir, factory)
    await lease_once(manager, "a")
    factory.release.clear()
    unload = asyncio.create_task(manager.unload("a"))
    await until(lambda: "close a" in factory.log)
    lease = asyncio.create_task(lease_once(manager, "a"))
    await asyncio.sleep(0.05)
    assert factory.loads == 1, "loaded a second copy while the first was still closing"
    assert not lease.done()
    factory.release.set()
    assert await asyncio.wait_for(unload, 5) is True
    await asyncio.wait_for(lease, 5)
    assert factory.log == ["load a", "close a", "closed a", "load a"]
    assert factory.most_alive == 1
    assert manager.state("a") == (LoadState.LOADED, "")


async def test_a_closing_model_still_counts_against_the_budget(models_dir: Path) -> None:
    # The budget fits one model: b must wait for a's memory rather than load beside it.
    factory = FakeFactory(estimate=6 * MB)
    manager = make_manager(models_dir, factory, budget=10 * MB)
    await lease_once(manager, "a")
    factory.release.clear()
    unload = asyncio.create_task(manager.unload("a"))
    await until(lambda: "close a" in factory.log)
    lease = asyncio.create_task(lease_once(manager, "b"))
    await asyncio.sleep(0.05)
    assert factory.loads == 1
    factory.release.set()
    await asyncio.wait_for(asyncio.gather(unload, lease), 5)
    assert factory.log == ["load a", "close a", "closed a", "load b"]
    assert factory.most_alive == 1


async def test_a_failed_load_is_remembered_until_the_file_changes(models_dir: Path) -> None:
    factory = FakeFactory()
    factory.error = RuntimeError("cannot allocate the weights")
    manager = make_manager(models_dir, factory)
    for _ in range(3):
        with pytest.raises(ModelLoadError, match="cannot allocate the weights"):
            await lease_once(manager, "a")
    with pytest.raises(ModelLoadError, match="cannot allocate the weights"):
        async for _ in manager.load("a"):  # an explicit LoadModel gets the same answer
            pass
    assert factory.loads == 1
    assert manager.state("a") == (LoadState.FAILED, "load failed: cannot allocate the weights")

    factory.error = None
    touch(models_dir / "a.gguf")
    await lease_once(manager, "a")
    assert factory.loads == 2
    assert manager.state("a") == (LoadState.LOADED, "")


async def test_a_remembered_failure_keeps_its_error_class(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corrupt = models_dir / "a.gguf"
    corrupt.write_bytes(b"NOPE" + b"\0" * 60)
    factory = FakeFactory()
    manager = make_manager(models_dir, factory)
    reads = count_calls(monkeypatch, manager._registry, "header")
    for _ in range(3):
        with pytest.raises(InvalidModelFile, match="magic"):
            await lease_once(manager, "a")
    assert len(reads) == 1
    write_tiny_gguf(corrupt)  # the file is replaced by a good one: tried again, and it loads
    await lease_once(manager, "a")
    assert len(reads) == 2
    assert factory.loads == 1


async def test_a_changed_spec_is_tried_again(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = FakeFactory()
    factory.error = RuntimeError("context too large")
    manager = make_manager(models_dir, factory)
    with pytest.raises(ModelLoadError):
        await lease_once(manager, "a")
    registry = manager._registry
    changed = dataclasses.replace(registry.get("a"), context_size=512)
    monkeypatch.setattr(registry, "get", lambda model_id: changed)
    with pytest.raises(ModelLoadError):
        await lease_once(manager, "a")
    assert factory.loads == 2


async def test_overloaded_is_not_remembered(models_dir: Path) -> None:
    factory = FakeFactory(estimate=6 * MB)
    manager = make_manager(models_dir, factory, budget=10 * MB)
    async with manager.lease("a"):  # in use, so it cannot be evicted for b
        with pytest.raises(Overloaded):
            await lease_once(manager, "b")
    await lease_once(manager, "b")  # a is idle now: evicted, and b loads
    assert factory.log == ["load a", "close a", "closed a", "load b"]
    assert manager.state("b") == (LoadState.LOADED, "")


def count_calls(monkeypatch: pytest.MonkeyPatch, obj: object, name: str) -> list[Any]:
    """Wrap obj.name to record each call's arguments; returns the record."""
    calls: list[Any] = []
    original = getattr(obj, name)

    def counting(*args: Any) -> Any:
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(obj, name, counting)
    return calls
