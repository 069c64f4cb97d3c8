"""llama-server's /tokenize, /detokenize, /apply-template; the compact model list; /metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient
from minerva.v1 import inference_pb2, models_pb2
from prometheus_client import generate_latest

from rest_bridge import metrics
from rest_bridge.app import create_app
from rest_bridge.core_client import CoreClient
from rest_bridge.metrics import BridgeMetrics, TokenGaps
from rest_bridge.settings import Settings
from tests.bridge.conftest import (
    CORE_ADDRESS,
    MODEL_ID,
    FakeCore,
    MakeBridge,
    chunk,
    final,
    interleaved,
    rpc_error,
    sample_model,
)

STOP = inference_pb2.FINISH_REASON_STOP


async def post(bridge: TestClient, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    response = await bridge.post(path, json=body)
    return response.status, await response.json()


async def test_tokenize_defaults_as_llama_server(bridge: TestClient, core: FakeCore) -> None:
    status, body = await post(bridge, "/tokenize", {"content": "Hi"})
    assert (status, body) == (200, {"tokens": [72, 105]})
    [sent] = core.inference.requests
    assert (sent.model_id, sent.text) == (MODEL_ID, "Hi")
    assert (sent.add_special, sent.parse_special, sent.with_pieces) == (False, True, False)


async def test_tokenize_with_pieces_gives_text_or_bytes(bridge: TestClient, core: FakeCore) -> None:
    status, body = await post(
        bridge, "/tokenize", {"content": "aé", "with_pieces": True, "model": "other"}
    )
    assert status == 200
    # "é" is two bytes, each a token here: neither is UTF-8 text alone.
    assert body["tokens"] == [
        {"id": 97, "piece": "a"},
        {"id": 195, "piece": [195]},
        {"id": 169, "piece": [169]},
    ]
    assert core.inference.requests[0].model_id == "other"


async def test_detokenize_and_apply_template(bridge: TestClient, core: FakeCore) -> None:
    assert await post(bridge, "/detokenize", {"tokens": [72, 105]}) == (200, {"content": "Hi"})
    assert await post(bridge, "/detokenize", {"tokens": []}) == (200, {"content": ""})
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    status, body = await post(bridge, "/apply-template", {"messages": messages})
    assert (status, body) == (200, {"prompt": "<system>Be brief.<user>Hi"})


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/tokenize", {}, "content"),
        ("/tokenize", {"content": 5}, "content"),
        ("/tokenize", {"content": "x", "with_pieces": "yes"}, "with_pieces"),
        ("/detokenize", {"tokens": ["a"]}, "tokens"),
        ("/apply-template", {"messages": []}, "messages"),
        ("/apply-template", {"messages": [{"role": "user", "content": "x"}], "tools": 3}, "tools"),
    ],
)
async def test_bad_utility_bodies_are_400(
    bridge: TestClient, path: str, body: dict[str, Any], param: str
) -> None:
    status, answer = await post(bridge, path, body)
    assert (status, answer["error"]["param"]) == (400, param)


async def test_without_a_model_the_only_one_is_used_else_400(
    bridge: TestClient, core: FakeCore
) -> None:
    core.models.models = [sample_model("a"), sample_model("b")]
    status, body = await post(bridge, "/tokenize", {"content": "x"})
    assert (status, body["error"]["param"]) == (400, "model")
    assert "2 models" in body["error"]["message"]


async def test_compact_model_list(bridge: TestClient, core: FakeCore) -> None:
    response = await bridge.get("/v1/models?format=compact")
    assert response.status == 200
    assert response.content_type == "text/plain"
    assert (await response.text()).startswith("MODEL|QUANT|SIZE_MB|TENSORS|LAYERS|VOCAB\n")
    assert core.models.requests[-1].compact
    bad = await bridge.get("/v1/models?format=yaml")
    assert bad.status == 400 and (await bad.json())["error"]["param"] == "format"


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text page."""
    shown = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{shown}}} " if labels else f"{name} "
    values = [float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)]
    assert len(values) == 1, (prefix, text)
    return values[0]


async def test_metrics_count_requests_tokens_and_latency(bridge: TestClient) -> None:
    chat = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}]}
    assert (await bridge.post("/v1/chat/completions", json=chat)).status == 200
    assert (await bridge.post("/v1/chat/completions", json={**chat, "stream": True})).status == 200
    assert (await bridge.post("/v1/chat/completions", json={"model": MODEL_ID})).status == 400
    response = await bridge.get("/metrics")
    assert response.status == 200 and response.content_type == "text/plain"
    page = await response.text()
    requests = "minerva_bridge_requests_total"
    assert metric(page, requests, endpoint="/v1/chat/completions", status="200") == 2
    assert metric(page, requests, endpoint="/v1/chat/completions", status="400") == 1
    # The fake core's final: 7 prompt and 3 completion tokens per answer.
    assert metric(page, "minerva_prompt_tokens_total", model=MODEL_ID) == 14
    assert metric(page, "minerva_completion_tokens_total", model=MODEL_ID) == 6


async def test_metrics_show_the_cores_model_stats(bridge: TestClient, core: FakeCore) -> None:
    loaded = sample_model()
    loaded.stats.CopyFrom(
        models_pb2.ModelStats(
            queue_depth=3, active_sequences=5, slots=8, prefix_cache_hit_tokens=1234
        )
    )
    core.models.models = [loaded, sample_model("cold")]
    core.models.models[1].load_state = models_pb2.LOAD_STATE_UNLOADED
    page = await (await bridge.get("/metrics")).text()
    here = {"core": CORE_ADDRESS}
    assert metric(page, "minerva_core_up", **here) == 1
    assert metric(page, "minerva_core_queue_depth", **here, model=MODEL_ID) == 3
    assert metric(page, "minerva_core_active_sequences", **here, model=MODEL_ID) == 5
    assert (
        metric(page, "minerva_core_prefix_cache_hit_tokens_total", **here, model=MODEL_ID) == 1234
    )
    assert metric(page, "minerva_core_model_loaded", **here, model="cold") == 0
    assert f'minerva_core_queue_depth{{core="{CORE_ADDRESS}",model="cold"}}' not in page


async def test_metrics_answer_when_the_core_is_down(bridge: TestClient, core: FakeCore) -> None:
    core.models.error = rpc_error(grpc.StatusCode.UNAVAILABLE, "down")
    response = await bridge.get("/metrics")
    assert response.status == 200
    page = await response.text()
    assert metric(page, "minerva_core_up", core=CORE_ADDRESS) == 0
    assert "minerva_core_model_loaded{" not in page


A, B, C = "10.0.0.1:50051", "10.0.0.2:50051", "10.0.0.3:50051"


def with_stats(model_id: str, queue_depth: int, decode_tokens: int) -> models_pb2.Model:
    listed = sample_model(model_id)
    listed.stats.CopyFrom(
        models_pb2.ModelStats(queue_depth=queue_depth, decode_tokens=decode_tokens)
    )
    return listed


class HangingModels:
    """A core that accepts the call and never answers it."""

    async def ListModels(self, request: Any, metadata: Any = (), timeout: float = 0) -> Any:  # noqa: ASYNC109
        await asyncio.Event().wait()


async def test_metrics_read_every_core_and_label_each_series_with_its_address(
    aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "SCRAPE_TIMEOUT_S", 0.05)
    first, second, down = FakeCore(), FakeCore(), FakeCore()
    first.models.models = [with_stats(MODEL_ID, 3, 100)]
    second.models.models = [with_stats(MODEL_ID, 1, 40), with_stats("other", 2, 7)]
    down.models.error = rpc_error(grpc.StatusCode.UNAVAILABLE, f"connection to {C} refused")
    clients = [
        CoreClient(A, models=first.models, inference=None, health=None),
        CoreClient(B, models=second.models, inference=None, health=None),
        CoreClient(C, models=down.models, inference=None, health=None),
        CoreClient("10.0.0.4:50051", models=HangingModels(), inference=None, health=None),
    ]
    app = create_app(Settings(core_address=",".join(c.address for c in clients)), clients)
    bridge: TestClient = await aiohttp_client(app)
    page = await (await bridge.get("/metrics")).text()
    ups = {c.address: metric(page, "minerva_core_up", core=c.address) for c in clients}
    assert ups == {A: 1, B: 1, C: 0, "10.0.0.4:50051": 0}
    queue, decoded = "minerva_core_queue_depth", "minerva_core_decode_tokens_total"
    assert metric(page, queue, core=A, model=MODEL_ID) == 3
    assert metric(page, queue, core=B, model=MODEL_ID) == 1
    assert metric(page, queue, core=B, model="other") == 2
    assert metric(page, decoded, core=A, model=MODEL_ID) == 100
    assert metric(page, decoded, core=B, model=MODEL_ID) == 40
    assert sum(line.startswith(f"{queue}{{") for line in page.splitlines()) == 3
    assert f'core="{C}",' not in page  # a core that failed adds no model series
    second.models.error = rpc_error(grpc.StatusCode.UNAVAILABLE, "down")  # read afresh each time
    page = await (await bridge.get("/metrics")).text()
    assert metric(page, "minerva_core_up", core=B) == 0
    assert f'{queue}{{core="{B}"' not in page
    assert metric(page, queue, core=A, model=MODEL_ID) == 3


async def test_metrics_need_the_key_when_keys_are_set(make_bridge: MakeBridge) -> None:
    bridge = await make_bridge(api_keys=("k1",))
    assert (await bridge.get("/metrics")).status == 401
    assert (await bridge.get("/metrics", headers={"Authorization": "Bearer k1"})).status == 200


ITL = "minerva_inter_token_latency_seconds"


def test_time_to_first_token_is_the_cores_and_no_gap_is_made_up() -> None:
    counters = BridgeMetrics()
    counters.observe_generation(
        "m",
        inference_pb2.GenerationFinal(
            usage=inference_pb2.Usage(prompt_tokens=5, completion_tokens=11),
            timings=inference_pb2.Timings(time_to_first_token_ms=30.0, decode_ms=200.0),
            choices=[inference_pb2.ChoiceEnd(index=0)],
        ),
    )
    page = generate_latest(counters.registry).decode()
    assert metric(page, "minerva_time_to_first_token_seconds_sum", model="m") == 0.03
    assert metric(page, "minerva_time_to_first_token_seconds_count", model="m") == 1
    # The core's decode time is no measurement of each gap: nothing is observed from it.
    assert f'{ITL}_count{{model="m"}}' not in page


def test_token_gaps_are_measured_per_choice_as_tokens_arrive() -> None:
    counters = BridgeMetrics()
    arrivals = iter([0.0, 0.01, 0.02, 0.05, 0.06, 0.30])
    gaps = TokenGaps(counters.inter_token_latency, "m", clock=lambda: next(arrivals))
    events = [
        *interleaved(["a", "b", "c"], ["x", "y"], ["z"]),  # 0: 3 tokens, 1: 2, 2: 1
        chunk("!"),  # held-back text released at the end: no token, no gap
        final(choices=[STOP, STOP, STOP]),
    ]
    for event in events:
        response = inference_pb2.ChatResponse()
        if isinstance(event, inference_pb2.GenerationChunk):
            response.chunk.CopyFrom(event)
        else:
            response.final.CopyFrom(event)
        gaps.saw(response)
    page = generate_latest(counters.registry).decode()
    # Arrivals: a 0.00, x 0.01, z 0.02, b 0.05, y 0.06, c 0.30 -> gaps a-b, b-c, x-y.
    assert metric(page, f"{ITL}_count", model="m") == (3 - 1) + (2 - 1) + (1 - 1)
    assert metric(page, f"{ITL}_sum", model="m") == pytest.approx(0.05 + 0.25 + 0.05)
    assert metric(page, f"{ITL}_bucket", le="0.04", model="m") == 0
    assert metric(page, f"{ITL}_bucket", le="0.08", model="m") == 2
    assert metric(page, f"{ITL}_bucket", le="0.32", model="m") == 3


def test_a_model_that_never_gave_two_tokens_has_no_latency_series() -> None:
    counters = BridgeMetrics()
    gaps = counters.token_gaps("no-such-model")
    gaps.saw(inference_pb2.ChatResponse(chunk=chunk("a", 1)))
    assert "no-such-model" not in generate_latest(counters.registry).decode()


TWO_CHOICES = [*interleaved(["a", "b", "c"], ["x", "y"]), final(choices=[STOP, STOP])]


@pytest.mark.parametrize(
    ("path", "body", "script", "gaps"),
    [
        ("/v1/chat/completions", {"n": 2}, TWO_CHOICES, 3),
        ("/v1/chat/completions", {"n": 2, "stream": True}, TWO_CHOICES, 3),
        ("/v1/completions", {"prompt": "Hi", "stream": True}, None, 1),
        ("/v1/completions", {"prompt": "Hi"}, None, 1),
        ("/api/chat", {"stream": True}, None, 1),
        ("/api/generate", {"prompt": "Hi", "stream": False}, None, 1),
    ],
)
async def test_each_answer_observes_one_latency_per_gap(
    bridge: TestClient,
    core: FakeCore,
    path: str,
    body: dict[str, Any],
    script: list[Any] | None,
    gaps: int,
) -> None:
    if script is not None:
        core.inference.script = script
    messages = [{"role": "user", "content": "Hi"}]
    request = {"model": MODEL_ID, **({} if "prompt" in body else {"messages": messages}), **body}
    for _ in range(2):
        response = await bridge.post(path, json=request)
        assert response.status == 200, await response.text()
        await response.read()
    page = await (await bridge.get("/metrics")).text()
    assert metric(page, f"{ITL}_count", model=MODEL_ID) == 2 * gaps
    assert metric(page, f"{ITL}_sum", model=MODEL_ID) >= 0
