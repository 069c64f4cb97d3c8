"""The choice of core: targets from --core, conversation keys, and Router.choose over cores with
given model lists, health and load (pure, no I/O); then a bridge over two fake cores (retry on
UNAVAILABLE before the first message, errors after it, the union of the model lists)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient
from minerva.v1 import inference_pb2, models_pb2

from rest_bridge.admission import Admission
from rest_bridge.app import create_app
from rest_bridge.app_keys import ROUTER
from rest_bridge.core_client import CoreClient
from rest_bridge.errors import ApiError
from rest_bridge.routing import Router, conversation, split_targets
from rest_bridge.settings import Settings
from tests.bridge.conftest import (
    MODEL_ID,
    FakeCore,
    chunk,
    final,
    rpc_error,
    sample_model,
    sse_events,
)

A, B = "127.0.0.1:50051", "127.0.0.1:50052"
OTHER = "gemma-3-270m"
READY = grpc.ChannelConnectivity.READY


@dataclass
class FakeChannel:
    state: grpc.ChannelConnectivity = READY

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self.state


def model(model_id: str = MODEL_ID, loaded: bool = True, slots: int = 2) -> models_pb2.Model:
    listed = sample_model(model_id)
    listed.load_state = models_pb2.LOAD_STATE_LOADED if loaded else models_pb2.LOAD_STATE_UNLOADED
    listed.slots, listed.queue_size = slots, 2
    return listed


def router(*cores: tuple[str, list[models_pb2.Model]]) -> Router:
    channel: Any = FakeChannel  # stands in for grpc.aio.Channel: only get_state is asked
    clients = [
        CoreClient(address, models=None, inference=None, health=None, channel=channel())
        for address, _ in cores
    ]
    made = Router(clients, Admission())
    for core, (_, models) in zip(made.cores, cores, strict=True):
        made.learn(core, models)
    return made


def pick(made: Router, model_id: str = MODEL_ID, key: str = "") -> str:
    chosen = made.choose(model_id, key)
    assert chosen is not None
    return chosen.address


def set_state(made: Router, address: str, state: grpc.ChannelConnectivity) -> None:
    channel = next(c.client.channel for c in made.cores if c.address == address)
    channel.state = state


@pytest.fixture
def hold() -> Iterator[Any]:
    """Holds admission places (requests in flight) until the test ends."""
    with contextlib.ExitStack() as stack:

        def take(made: Router, address: str, n: int = 1, model_id: str = MODEL_ID) -> None:
            for _ in range(n):
                stack.enter_context(made.admission.admit(address, model_id))

        yield take


@pytest.mark.parametrize(
    ("value", "targets"),
    [
        ("127.0.0.1:50051", ("127.0.0.1:50051",)),
        (" a:1, b:2 ,a:1,", ("a:1", "b:2")),
        ("[::1]:50051,localhost:50052", ("[::1]:50051", "localhost:50052")),
        ("dns:///minerva-core:50051", ("dns:///minerva-core:50051",)),
        ("ipv4:10.0.0.1:50051,10.0.0.2:50051", ("ipv4:10.0.0.1:50051,10.0.0.2:50051",)),
    ],
)
def test_core_targets(value: str, targets: tuple[str, ...]) -> None:
    assert split_targets(value) == targets


@pytest.mark.parametrize("value", ["", " , ", "a:1,b", "host:port", "a:1,:2"])
def test_malformed_core_lists_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match=r"HOST:PORT|names no core"):
        split_targets(value)


def _chat(*turns: tuple[str, str], session: str = "") -> inference_pb2.ChatRequest:
    messages = [inference_pb2.ChatMessage(role=r, content=c) for r, c in turns]
    return inference_pb2.ChatRequest(model_id=MODEL_ID, messages=messages, session_id=session)


def test_a_conversations_turns_share_a_key_and_others_do_not() -> None:
    first = _chat(("system", "Be brief."), ("user", "Name a colour."))
    later = _chat(
        ("system", "Be brief."),
        ("user", "Name a colour."),
        ("assistant", "Red."),
        ("user", "Another?"),
    )
    other = _chat(("system", "Be brief."), ("user", "Name a fruit."))
    assert conversation(first) == conversation(later) != conversation(other)
    assert conversation(first).startswith("head:")
    named = _chat(("user", "Name a fruit."), session="s-1")
    assert conversation(named) == "session:s-1" == conversation(first, session="s-1")
    prompt = inference_pb2.GenerateRequest(model_id=MODEL_ID, text="x" * 5000 + "tail")
    longer = inference_pb2.GenerateRequest(model_id=MODEL_ID, text="x" * 5000 + "other tail")
    assert conversation(prompt) == conversation(longer)


def test_only_cores_that_list_the_model_get_it() -> None:
    made = router((A, [model()]), (B, [model(), model(OTHER)]))
    assert {pick(made, OTHER, key=str(i)) for i in range(20)} == {B}
    # A retry never goes to a core without the model (it would answer NOT_FOUND).
    assert made.choose(OTHER, exclude=[B]) is None
    assert made.choose(MODEL_ID, exclude=[B]) is made.cores[0]
    # A model no core lists goes to some core, which answers NOT_FOUND with its own words.
    assert pick(made, "nobody-has-it") in (A, B)


def test_a_loaded_core_with_a_free_slot_wins_then_the_least_busy(hold: Any) -> None:
    made = router((A, [model(loaded=False)]), (B, [model(loaded=True, slots=2)]))
    assert pick(made, key="k1") == B
    hold(made, B)
    assert pick(made, key="k2") == B  # one slot of two busy: still the loaded one
    hold(made, B)
    assert pick(made, key="k3") == A  # its slots are full: the idle core, even unloaded


def test_fewest_in_flight_among_equals_and_keys_spread_when_idle(hold: Any) -> None:
    made = router((A, [model(slots=8)]), (B, [model(slots=8)]))
    assert {pick(made, key=f"conversation-{i}") for i in range(20)} == {A, B}
    hold(made, A, 2)
    hold(made, B, 1)
    assert pick(made, key="new") == B


def test_a_conversation_stays_on_its_core_while_it_has_a_free_slot(hold: Any) -> None:
    made = router((A, [model(slots=2)]), (B, [model(slots=2)]))
    home = pick(made, key="session:s")
    away = B if home == A else A
    hold(made, home)  # busier than the other core, but a slot is free
    assert [pick(made, key="session:s") for _ in range(3)] == [home] * 3
    hold(made, home)  # now every slot is busy: the conversation moves, and stays moved
    assert pick(made, key="session:s") == away
    assert pick(made, key="session:s") == away


def test_an_unhealthy_core_gets_nothing_until_it_is_ready_again() -> None:
    made = router((A, [model()]), (B, [model()]))
    home = pick(made, key="session:s")
    away = B if home == A else A
    set_state(made, home, grpc.ChannelConnectivity.TRANSIENT_FAILURE)
    assert {pick(made, key=f"k{i}") for i in range(10)} | {pick(made, key="session:s")} == {away}
    set_state(made, home, grpc.ChannelConnectivity.CONNECTING)  # READY ones come first
    assert pick(made, key="k-new") == away
    set_state(made, home, READY)
    assert {pick(made, key=f"k{i}") for i in range(20)} == {A, B}
    # Every core down: one is still named, so the client hears gRPC's UNAVAILABLE (a 503).
    set_state(made, A, grpc.ChannelConnectivity.TRANSIENT_FAILURE)
    set_state(made, B, grpc.ChannelConnectivity.TRANSIENT_FAILURE)
    assert pick(made) in (A, B)


def test_no_room_anywhere_is_a_429_and_exclusion_can_leave_none(hold: Any) -> None:
    made = router((A, [model(slots=1)]), (B, [model(slots=1)]))
    hold(made, A, 3)  # slots 1 + queue 2
    assert pick(made, key="k") == B
    hold(made, B, 3)
    with pytest.raises(ApiError) as refused:
        made.choose(MODEL_ID, "k")
    assert refused.value.status == 429 and "6 requests in flight" in refused.value.message
    assert made.choose(MODEL_ID, "k", exclude=[A, B]) is None
    # Calls outside generation (embeddings, tokenize) are not held to its capacity.
    assert made.choose(MODEL_ID, gated=False) is not None


# --- a bridge over two fake cores -------------------------------------------------------------

CHAT = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}]}


def client_of(core: FakeCore, address: str) -> CoreClient:
    return CoreClient(address, models=core.models, inference=core.inference, health=core.health)


async def two_core_bridge(aiohttp_client: Any, first: FakeCore, second: FakeCore) -> TestClient:
    app = create_app(Settings(core_address=f"{A},{B}"), [client_of(first, A), client_of(second, B)])
    bridge: TestClient = await aiohttp_client(app)
    return bridge


@pytest.mark.parametrize("stream", [True, False])
async def test_unavailable_before_the_first_message_is_retried_on_the_other_core(
    aiohttp_client: Any, stream: bool
) -> None:
    first, second = FakeCore(), FakeCore()
    first.inference.script = [rpc_error(grpc.StatusCode.UNAVAILABLE, "connection reset")]
    second.inference.script = [chunk("Hello", 1), final()]
    bridge = await two_core_bridge(aiohttp_client, first, second)
    answers = []
    for i in range(4):  # whichever core each request is sent to first
        body = {**CHAT, "messages": [{"role": "user", "content": f"Hi {i}"}], "stream": stream}
        response = await bridge.post("/v1/chat/completions", json=body)
        assert response.status == 200
        answers.append(await response.text())
    assert len(first.inference.calls) >= 1  # the failures were real, and each retried once
    assert len(second.inference.calls) == 4
    assert all("Hello" in str(answer) for answer in answers)


async def test_unavailable_on_both_cores_is_a_503_after_one_retry(aiohttp_client: Any) -> None:
    first, second = FakeCore(), FakeCore()
    for core in (first, second):
        core.inference.script = [rpc_error(grpc.StatusCode.UNAVAILABLE, "down")]
    bridge = await two_core_bridge(aiohttp_client, first, second)
    response = await bridge.post("/v1/chat/completions", json=CHAT)
    assert response.status == 503
    assert len(first.inference.calls) + len(second.inference.calls) == 2


async def test_a_core_lost_mid_stream_is_an_error_event_not_a_retry(aiohttp_client: Any) -> None:
    first, second = FakeCore(), FakeCore()
    for core in (first, second):
        core.inference.script = [chunk("Hel", 1), rpc_error(grpc.StatusCode.UNAVAILABLE, "gone")]
    bridge = await two_core_bridge(aiohttp_client, first, second)
    response = await bridge.post("/v1/chat/completions", json={**CHAT, "stream": True})
    events = sse_events(await response.text())
    assert response.status == 200 and events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == "core_unavailable"
    assert len(first.inference.calls) + len(second.inference.calls) == 1


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
async def test_a_stream_that_ends_without_its_final_is_an_error(
    aiohttp_client: Any, path: str
) -> None:
    first, second = FakeCore(), FakeCore()
    for core in (first, second):
        core.inference.script = [chunk("Hel", 1)]  # no final: the answer was cut short
    bridge = await two_core_bridge(aiohttp_client, first, second)
    response = await bridge.post(path, json={**CHAT, "stream": True})
    text = await response.text()
    assert response.status == 200
    if path.startswith("/v1/"):
        events = sse_events(text)
        assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "core_unavailable"
    else:
        lines = [json.loads(line) for line in text.splitlines()]
        assert lines[0]["message"]["content"] == "Hel" and "error" in lines[-1]
    no_stream = await bridge.post(path, json={**CHAT, "stream": False})
    assert no_stream.status == 503


async def test_a_model_on_one_core_is_routed_there_and_lists_are_joined(
    aiohttp_client: Any,
) -> None:
    first, second = FakeCore(), FakeCore()
    second.models.models = [sample_model(), sample_model(OTHER)]
    bridge = await two_core_bridge(aiohttp_client, first, second)
    await _until_listed(bridge, OTHER)
    for i in range(4):
        body = {"model": OTHER, "messages": [{"role": "user", "content": f"Hi {i}"}]}
        assert (await bridge.post("/v1/chat/completions", json=body)).status == 200
    assert [r.model_id for r in second.inference.requests].count(OTHER) == 4
    assert not [r for r in first.inference.requests if r.model_id == OTHER]
    listed = await (await bridge.get("/v1/models")).json()
    assert [m["id"] for m in listed["data"]] == [MODEL_ID, OTHER]
    tags = await (await bridge.get("/api/tags")).json()
    assert sorted(m["name"] for m in tags["models"]) == sorted(
        [f"{MODEL_ID}:latest", f"{OTHER}:latest"]
    )
    first.health.error = rpc_error(grpc.StatusCode.UNAVAILABLE)
    assert (await bridge.get("/health")).status == 200  # one core serving is enough
    second.health.error = rpc_error(grpc.StatusCode.UNAVAILABLE)
    assert (await bridge.get("/health")).status == 503


async def test_the_listing_survives_one_core_down(aiohttp_client: Any) -> None:
    first, second = FakeCore(), FakeCore()
    first.models.error = rpc_error(grpc.StatusCode.UNAVAILABLE)
    second.models.models = [sample_model(OTHER)]
    bridge = await two_core_bridge(aiohttp_client, first, second)
    listed = await (await bridge.get("/v1/models")).json()
    assert [m["id"] for m in listed["data"]] == [OTHER]
    second.models.error = rpc_error(grpc.StatusCode.UNAVAILABLE)
    assert (await bridge.get("/v1/models")).status == 503


async def _until_listed(bridge: TestClient, model_id: str) -> None:
    for _ in range(500):
        if any(core.serves(model_id) for core in bridge.app[ROUTER].cores):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{model_id} never listed")


def test_a_target_with_a_scheme_is_routed_but_not_gated() -> None:
    """A dns:/// target may be several cores behind one channel: one core's capacity must not
    cap them all, so the bridge leaves refusals to the cores."""
    made = router(("dns:///minerva-core-headless:50051", [model()]), ("127.0.0.1:2", [model()]))
    assert made.admission.capacity == {("127.0.0.1:2", MODEL_ID): 4}
    assert made.admission.has_room("dns:///minerva-core-headless:50051", MODEL_ID)
