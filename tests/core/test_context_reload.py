"""A request's context size (Ollama's num_ctx) with a fake engine factory: loads with it, reloads
only once the requests holding the old copy finish, clamps to the trained context, counts it
against the memory budget, and remembers failures per size."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from core.engine.types import LoadStage
from core.errors import InvalidRequest, ModelLoadError
from core.manager import ModelManager
from core.model_slot import LoadState
from tests.core.test_manager_fixes import (
    CONFIGURED,
    MB,
    TRAINED,
    FakeFactory,
    lease_once,
    make_manager,
    until,
)
from tests.unit.conftest import write_tiny_gguf


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    write_tiny_gguf(root / "a.gguf")
    return root


def context_of(manager: ModelManager, model_id: str) -> int:
    """Model.context_size as GetModel shows it."""
    registry = manager._registry
    spec = registry.get(model_id)
    return manager.sizing(spec, registry.header(spec)).context_size


async def test_a_new_size_waits_for_the_requests_in_flight_then_reloads(models_dir: Path) -> None:
    factory = FakeFactory()
    manager = make_manager(models_dir, factory, budget=100 * MB)
    done = asyncio.Event()
    holding = asyncio.Event()

    async def hold() -> None:
        async with manager.lease("a"):
            holding.set()
            await done.wait()

    first = asyncio.create_task(hold())
    await holding.wait()
    bigger = asyncio.create_task(lease_once(manager, "a", 4096))
    await until(lambda: manager._slots["a"].draining is not None)
    later = asyncio.create_task(lease_once(manager, "a"))  # no size: waits for the new copy
    await asyncio.sleep(0.05)
    assert factory.log == ["load a"], "the copy in use was freed under its request"
    assert not bigger.done() and not later.done()
    done.set()
    await asyncio.wait_for(asyncio.gather(first, bigger, later), 5)
    assert factory.log == ["load a", "close a", "closed a", "load a 4096"]
    assert context_of(manager, "a") == 4096
    assert manager._slots["a"].estimate == 12 * MB  # the budget counts the larger KV cache


async def test_a_size_is_clamped_to_the_trained_context_and_stays(models_dir: Path) -> None:
    factory = FakeFactory()
    manager = make_manager(models_dir, factory, budget=100 * MB)
    await lease_once(manager, "a", 10**6)
    await lease_once(manager, "a")  # no size: served as loaded
    await lease_once(manager, "a", TRAINED)  # the same size once clamped: no reload
    assert factory.log == [f"load a {TRAINED}"]
    await manager.unload("a")
    assert context_of(manager, "a") == TRAINED  # what the next load takes
    await lease_once(manager, "a")
    assert factory.log[-1] == f"load a {TRAINED}"


async def test_the_configured_size_asked_for_does_not_reload(models_dir: Path) -> None:
    factory = FakeFactory()
    manager = make_manager(models_dir, factory)
    await lease_once(manager, "a")
    await lease_once(manager, "a", CONFIGURED)
    async for _ in manager.load("a", context_size=CONFIGURED):
        pass
    assert factory.log == ["load a"]


async def test_load_model_with_another_size_reloads(models_dir: Path) -> None:
    factory = FakeFactory()
    manager = make_manager(models_dir, factory, budget=100 * MB)
    await lease_once(manager, "a")
    stages = [e.stage async for e in manager.load("a", context_size=1024)]
    assert stages[-1] is LoadStage.READY
    assert factory.log == ["load a", "close a", "closed a", "load a 1024"]
    assert context_of(manager, "a") == 1024


@pytest.mark.parametrize("size", [0, 8192])
async def test_a_size_below_one_or_over_the_budget_is_invalid(models_dir: Path, size: int) -> None:
    # 8192 tokens make the fake estimate 24 MB: more than the whole 10 MB budget.
    factory = FakeFactory()
    manager = make_manager(models_dir, factory, budget=10 * MB)
    with pytest.raises(InvalidRequest) as caught:
        await lease_once(manager, "a", size)
    assert caught.value.param == "context_size"
    assert factory.log == [] and manager.state("a") == (LoadState.UNLOADED, "")


async def test_a_failed_load_is_remembered_per_size(models_dir: Path) -> None:
    factory = FakeFactory()
    manager = make_manager(models_dir, factory, budget=100 * MB)
    factory.error = RuntimeError("cannot allocate the KV cache")
    with pytest.raises(ModelLoadError):
        await lease_once(manager, "a", 4096)
    factory.error = None
    with pytest.raises(ModelLoadError):  # the same size on the same file: not tried again
        await lease_once(manager, "a", 4096)
    await lease_once(manager, "a", 1024)  # another size is another try
    assert factory.log == ["load a 4096", "load a 1024"]


async def test_a_caller_that_gives_up_leaves_the_reload_to_finish(models_dir: Path) -> None:
    factory = FakeFactory()
    manager = make_manager(models_dir, factory, budget=100 * MB)
    done = asyncio.Event()
    holding = asyncio.Event()

    async def hold() -> None:
        async with manager.lease("a"):
            holding.set()
            await done.wait()

    first = asyncio.create_task(hold())
    await holding.wait()
    gone = asyncio.create_task(lease_once(manager, "a", 4096))
    await until(lambda: manager._slots["a"].draining is not None)
    gone.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await gone
    done.set()
    await first
    await asyncio.wait_for(lease_once(manager, "a"), 5)  # loads with the size asked for last
    assert factory.log == ["load a", "close a", "closed a", "load a 4096"]
