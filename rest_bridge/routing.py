"""Which core answers a request. Among the cores that list its model, the healthiest tier (READY,
then connecting, then down), those with room: the one its conversation went to before while that
core has a free slot; else a core with a free slot and the model loaded, then the fewest requests
in flight, ties broken by a hash of the conversation. A call that fails UNAVAILABLE before its
first message (a generation stream, any other call about a model) is made once more on another
core that lists the model.

`--core A,B` makes one channel per core, so the bridge chooses; a target with a scheme
(`dns:///svc:50051`) is one round_robin channel that gRPC spreads over what it resolves to, so
the choice here is only among the targets given (a dns name should front identical cores)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections import OrderedDict
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from aiohttp import web
from minerva.v1 import inference_pb2, models_pb2

from rest_bridge.admission import Admission
from rest_bridge.app_keys import ROUTER
from rest_bridge.core_client import CoreClient
from rest_bridge.errors import ApiError
from rest_bridge.settings import parse_host_port

log = logging.getLogger(__name__)

# A --core value starting with one of these is a single gRPC target (its resolver may yield
# several addresses); anything else is a comma-separated list of HOST:PORT.
URI_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:", "xds:")
# Characters of a conversation's opening hashed into its affinity key when no session is sent.
AFFINITY_CHARS = 2048
# Conversations remembered (least recently used forgotten first).
AFFINITY_ENTRIES = 10_000
_HEALTH_RANK = {
    grpc.ChannelConnectivity.READY: 0,
    grpc.ChannelConnectivity.IDLE: 1,
    grpc.ChannelConnectivity.CONNECTING: 1,
}
_DOWN_RANK = 2

T = TypeVar("T")
# Starts a generation stream on a core: `lambda core: core.inference.Chat(request, ...)`.
Start = Callable[[CoreClient], Any]
# One try of any other call about a model: `lambda core: core.inference.Embed(request, ...)`.
Attempt = Callable[[CoreClient], Awaitable[T]]
# The handler's boundary translator given the failing core's address, e.g. translate_grpc_errors.
Errors = Callable[[str], contextlib.AbstractAsyncContextManager[None]]


def split_targets(value: str) -> tuple[str, ...]:
    """--core as channel targets: one URI target, or each HOST:PORT of a comma-separated list
    (duplicates dropped); ValueError when an item is malformed."""
    value = value.strip()
    if value.startswith(URI_SCHEMES):
        return (value,)
    targets = tuple(dict.fromkeys(item.strip() for item in value.split(",") if item.strip()))
    if not targets:
        raise ValueError("--core names no core")
    for target in targets:
        parse_host_port(target)
    return targets


def conversation(
    request: inference_pb2.ChatRequest | inference_pb2.GenerateRequest, session: str = ""
) -> str:
    """The affinity key: the client's session id when sent, else a digest of the conversation's
    opening, which its later turns repeat (messages up to the first user message, or the first
    characters of a prompt)."""
    session = session or request.session_id
    if session:
        return "session:" + session
    if isinstance(request, inference_pb2.ChatRequest):
        head = _opening(request.messages)
    elif request.WhichOneof("prompt") == "text":
        head = request.text
    else:
        head = ",".join(map(str, request.token_ids.ids[: AFFINITY_CHARS // 4]))
    data = head[:AFFINITY_CHARS].encode(errors="surrogatepass")
    return "head:" + hashlib.blake2b(data, digest_size=16).hexdigest()


def _opening(messages: Iterable[inference_pb2.ChatMessage]) -> str:
    parts = []
    for message in messages:
        parts.append(f"{message.role}\x00{message.content}")
        if message.role == "user":
            break
    return "\x01".join(parts)


@dataclass
class Core:
    """One channel target and what its last ListModels said."""

    client: CoreClient
    models: dict[str, models_pb2.Model] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.client.address

    def health_rank(self) -> int:
        return _HEALTH_RANK.get(self.client.connectivity(), _DOWN_RANK)

    def serves(self, model: str) -> bool:
        return model in self.models

    def loaded(self, model: str) -> bool:
        listed = self.models.get(model)
        return listed is not None and listed.load_state == models_pb2.LOAD_STATE_LOADED

    def slots(self, model: str) -> int:
        listed = self.models.get(model)
        return listed.slots if listed is not None else 0


class Router:
    """The cores, their in-flight counts (the admission's) and the conversations' last cores."""

    def __init__(self, clients: Sequence[CoreClient], admission: Admission) -> None:
        if not clients:
            raise ValueError("the router needs at least one core")
        self.cores = [Core(client) for client in clients]
        self.admission = admission
        self._affinity: OrderedDict[str, str] = OrderedDict()

    def learn(self, core: Core, models: Iterable[models_pb2.Model]) -> None:
        """A core's fresh model list (from the admission's refresher)."""
        listed = list(models)
        core.models = {model.id: model for model in listed}
        # A target with a scheme may resolve to several cores behind one channel: one core's
        # capacity would cap them all, so only listed HOST:PORT cores are gated.
        self.admission.learn(core.address, [] if core.address.startswith(URI_SCHEMES) else listed)

    def choose(
        self, model: str, key: str = "", exclude: Iterable[str] = (), gated: bool = True
    ) -> Core | None:
        """The core for one request (see the module docstring); None when every core is
        excluded; with `gated` (generation), the admission's 429 when no candidate has room."""
        skip = set(exclude)
        pool = [core for core in self.cores if core.address not in skip]
        # No core lists the model: any of them answers (NOT_FOUND, or it was just added).
        if any(core.serves(model) for core in self.cores):
            pool = [core for core in pool if core.serves(model)]
        if not pool:
            return None
        ranks = {core.address: core.health_rank() for core in pool}
        best = min(ranks.values())
        pool = [core for core in pool if ranks[core.address] == best]
        roomy = [c for c in pool if not gated or self.admission.has_room(c.address, model)]
        if not roomy:
            raise self.admission.busy(model)
        chosen = self._sticky(model, key, roomy) or min(
            roomy, key=lambda core: self._score(model, key, core)
        )
        self._remember(key, chosen.address)
        return chosen

    def _sticky(self, model: str, key: str, roomy: list[Core]) -> Core | None:
        """The conversation's last core while it is a candidate with a free slot."""
        last = self._affinity.get(key)
        for core in roomy:
            if core.address == last and not self._slots_full(model, core):
                return core
        return None

    def _score(self, model: str, key: str, core: Core) -> tuple[bool, bool, int, str]:
        in_flight = self.admission.in_flight[core.address, model]
        tie = hashlib.blake2b(f"{key}\x00{core.address}".encode(), digest_size=8).hexdigest()
        return self._slots_full(model, core), not core.loaded(model), in_flight, tie

    def _slots_full(self, model: str, core: Core) -> bool:
        slots = core.slots(model)
        return bool(slots) and self.admission.in_flight[core.address, model] >= slots

    def _remember(self, key: str, address: str) -> None:
        if not key:
            return
        self._affinity[key] = address
        self._affinity.move_to_end(key)
        while len(self._affinity) > AFFINITY_ENTRIES:
            self._affinity.popitem(last=False)


async def unary(
    request: web.Request,
    model: str,
    attempt: Attempt[T],
    errors: Errors,
    *,
    started: Callable[[], bool] = lambda: False,
) -> T:
    """`attempt` on the core chosen for `model`, made once more on another core that lists the
    model when the first answers UNAVAILABLE (never on another code, never twice, never once
    `started` says an answer had begun); a failure left is translated by `errors` with the
    address of the core that gave it. Generation streams go through generation() instead."""
    router = request.app[ROUTER]
    core, retried = _chosen(router, model), False
    while True:
        async with errors(core.address):
            try:
                return await attempt(core.client)
            except grpc.aio.AioRpcError as error:
                again = None if retried or started() else _another(router, model, core, error)
                if again is None:
                    raise
                core, retried = again, True


async def server_stream(
    request: web.Request,
    model: str,
    open_stream: Callable[[CoreClient], AsyncIterable[T]],
    errors: Errors,
) -> list[T]:
    """A server stream's messages (e.g. LoadModel's stages), as unary(): started once more on
    another core when it fails UNAVAILABLE before its first message, not after."""
    messages: list[T] = []

    async def drain(client: CoreClient) -> list[T]:
        async for message in open_stream(client):
            messages.append(message)
        return messages

    return await unary(request, model, drain, errors, started=lambda: bool(messages))


def _chosen(router: Router, model: str) -> Core:
    core = router.choose(model, gated=False)
    if core is None:  # not reached: nothing is excluded
        raise RuntimeError("no core to choose from")
    return core


def _another(router: Router, model: str, failed: Core, error: grpc.aio.AioRpcError) -> Core | None:
    """Where a call that failed on `failed` is made again: only after UNAVAILABLE, and only on
    another core that lists the model (None: there is none)."""
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return None
    again = router.choose(model, exclude=[failed.address], gated=False)
    if again is not None:
        _log_retry(failed.address, error, again.address)
    return again


def _log_retry(failed: str, error: grpc.aio.AioRpcError, again: str) -> None:
    log.warning("core %s unavailable (%s): retrying on %s", failed, error.details(), again)


def cores(request: web.Request) -> list[CoreClient]:
    """Every core, for calls that ask them all (model lists, health)."""
    return [core.client for core in request.app[ROUTER].cores]


def serving(request: web.Request, model: str) -> list[CoreClient]:
    """The cores that list `model` (every core when none does), e.g. for an unload."""
    all_cores = request.app[ROUTER].cores
    return [core.client for core in [c for c in all_cores if c.serves(model)] or all_cores]


def target_label(request: web.Request) -> str:
    """Where the cores are, for the operator's log lines (never told to clients)."""
    return ",".join(client.address for client in cores(request))


async def list_models(request: web.Request, compact: bool = False) -> Any:
    """Every core's ListModels merged: each model once (a core that has it loaded wins), the
    compact text's lines once each. Cores that fail are left out; when all fail, the first
    failure is raised (for the handler to translate)."""
    clients = cores(request)
    ask = models_pb2.ListModelsRequest(compact=compact)
    replies = await asyncio.gather(
        *(c.models.ListModels(ask, metadata=c.metadata) for c in clients), return_exceptions=True
    )
    answered = [r for r in replies if not isinstance(r, BaseException)]
    for reply in replies:
        if isinstance(reply, BaseException) and (
            not answered or not isinstance(reply, grpc.aio.AioRpcError)
        ):
            raise reply
    return _merge(answered)


def _merge(replies: Sequence[Any]) -> Any:
    if len(replies) == 1:
        return replies[0]
    merged: dict[str, models_pb2.Model] = {}
    for reply in replies:
        for model in reply.models:
            known = merged.get(model.id)
            if known is None or (
                model.load_state == models_pb2.LOAD_STATE_LOADED
                and known.load_state != models_pb2.LOAD_STATE_LOADED
            ):
                merged[model.id] = model
    lines = dict.fromkeys(line for reply in replies for line in reply.compact.splitlines())
    compact = "".join(f"{line}\n" for line in lines)
    return models_pb2.ListModelsResponse(models=list(merged.values()), compact=compact)


class RoutedCall:
    """A generation stream on the chosen core, holding a place in that core's admission; started
    once more on another core when the first fails UNAVAILABLE before any message. A stream that
    ends without its final message (a core gone mid-answer) fails UNAVAILABLE, so the client gets
    an error, never a silently truncated answer."""

    def __init__(self, router: Router, model: str, key: str, start: Start) -> None:
        self.router, self.model, self.key, self.start = router, model, key, start
        self._place = contextlib.ExitStack()
        self.core: Core | None = None
        self.call: Any = None

    def open(self, exclude: Iterable[str] = ()) -> bool:
        """Starts the call on the chosen core; False when no other core is left."""
        core = self.router.choose(self.model, self.key, exclude)
        if core is None:
            return False
        self.close()
        self._place.enter_context(self.router.admission.admit(core.address, self.model))
        self.core, self.call = core, self.start(core.client)
        log.debug("%s -> core %s", self.model, core.address)
        return True

    def cancel(self) -> None:
        if self.call is not None:
            self.call.cancel()

    def close(self) -> None:
        self.cancel()
        self._place.close()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._events()

    async def _events(self) -> AsyncIterator[Any]:
        events = aiter(self.call)
        try:
            first = await anext(events, None)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or not self._retry(error):
                raise
            events = aiter(self.call)
            first = await anext(events, None)
        ended = False
        if first is not None:
            ended = _is_final(first)
            yield first
        async for event in events:
            ended = ended or _is_final(event)
            yield event
        if not ended:
            raise _cut_short()

    def _retry(self, error: grpc.aio.AioRpcError) -> bool:
        failed = self.core.address if self.core is not None else ""
        try:
            retried = self.open(exclude=[failed])
        except ApiError:  # no room elsewhere: the client hears of the first failure
            log.info("core %s unavailable; no other core has room", failed)
            return False
        if retried and self.core is not None:
            _log_retry(failed, error, self.core.address)
        return retried


def _is_final(event: Any) -> bool:
    return bool(event.WhichOneof("event") == "final")


def _cut_short() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details="the core's stream ended before its final message",
    )


@contextlib.contextmanager
def generation(request: web.Request, model: str, key: str, start: Start) -> Iterator[RoutedCall]:
    """A routed generation call for the block; its place is freed and the call cancelled however
    the block ends (a client that disconnects stops the core's token loop)."""
    routed = RoutedCall(request.app[ROUTER], model, key, start)
    routed.open()
    try:
        yield routed
    finally:
        routed.close()
