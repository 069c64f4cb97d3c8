"""Early refusal under overload: the bridge counts its generation requests in flight per core and
model, and refuses one beyond what the chosen core can take (its slots + queue_size for the model,
as that core's ListModels reports them) at once with a 429 and Retry-After, instead of passing it
to a core that is busy computing and would refuse it later. The cores still enforce their own
limit (other bridges, gRPC clients). The one refresher below also feeds the router."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from aiohttp import web
from minerva.v1 import models_pb2

from rest_bridge.app_keys import ROUTER
from rest_bridge.errors import STATUS_TABLE, ApiError

if TYPE_CHECKING:
    from rest_bridge.routing import Core, Router

log = logging.getLogger(__name__)

# How often the model lists are read again (a reload may change a model's slots, a core may
# gain or lose models, load or unload them).
REFRESH_S = 5.0
_BUSY = STATUS_TABLE[grpc.StatusCode.RESOURCE_EXHAUSTED]

Place = tuple[str, str]  # (core address, model id)


class Admission:
    """In-flight generation requests per (core, model) against each one's known capacity."""

    def __init__(self) -> None:
        self.capacity: dict[Place, int] = {}
        self.in_flight: Counter[Place] = Counter()

    def learn(self, core: str, models: Iterable[models_pb2.Model]) -> None:
        """One core's capacities from its model list; a model it does not size is not gated."""
        kept = {place: limit for place, limit in self.capacity.items() if place[0] != core}
        kept.update({(core, m.id): m.slots + m.queue_size for m in models if m.slots})
        self.capacity = kept

    def has_room(self, core: str, model: str) -> bool:
        limit = self.capacity.get((core, model))
        return limit is None or self.in_flight[core, model] < limit

    def busy(self, model: str) -> ApiError:
        """The 429 when no core has room for the model."""
        limit = sum(n for (_, served), n in self.capacity.items() if served == model)
        return ApiError(
            429,
            f"model {model!r} is busy: {limit} requests in flight; retry later",
            type=_BUSY.type,
            code=_BUSY.code,
        )

    @contextlib.contextmanager
    def admit(self, core: str, model: str) -> Iterator[None]:
        """Holds one of the model's places on the core while the block runs; ApiError 429 when
        none is left."""
        if not self.has_room(core, model):
            raise self.busy(model)
        place = (core, model)
        self.in_flight[place] += 1
        try:
            yield
        finally:
            self.in_flight[place] -= 1
            if not self.in_flight[place]:
                del self.in_flight[place]


async def refresh(app: web.Application) -> None:
    """Reads every core's model list every REFRESH_S; a core that is down keeps its last one
    (the router skips it while its channel is unhealthy)."""
    router = app[ROUTER]
    while True:
        outcomes = await asyncio.gather(
            *(_refresh_one(router, core) for core in router.cores), return_exceptions=True
        )
        for core, outcome in zip(router.cores, outcomes, strict=True):
            if isinstance(outcome, Exception):  # one bad reply must not stop the refreshes
                log.error("models of core %s not refreshed", core.address, exc_info=outcome)
        await asyncio.sleep(REFRESH_S)


async def _refresh_one(router: Router, core: Core) -> None:
    client = core.client
    try:
        call = client.models.ListModels(models_pb2.ListModelsRequest(), metadata=client.metadata)
        reply: Any = await asyncio.wait_for(call, REFRESH_S)
    except (grpc.aio.AioRpcError, TimeoutError) as error:
        log.debug("models of core %s not refreshed: %r", client.address, error)
        return
    router.learn(core, reply.models)


async def refresher(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the refresh task for the app's lifetime."""
    task = asyncio.create_task(refresh(app))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
