"""GET /metrics in Prometheus text format: the bridge's own counters and each core's per model.

The bridge counts requests by endpoint and status, and prompt and completion tokens by model;
time to first token is the core's measurement, taken from each generation's final message;
inter-token latency is the bridge's own: the gap between two tokens of one choice as they reach
it from the core. Every core's per-model gauges and totals (ModelStats) are read with ListModels
at scrape time (all cores at once, each within SCRAPE_TIMEOUT_S), so a scrape always shows the
cores as they are; each series is labelled with its core's address as given to --core.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence

import grpc
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from minerva.v1 import inference_pb2, models_pb2
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rest_bridge import routing
from rest_bridge.app_keys import METRICS
from rest_bridge.core_client import CoreClient
from rest_bridge.errors import ApiError

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SCRAPE_TIMEOUT_S = 2.0
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TOKEN_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)


class CoreModels(Collector):
    """Each core's ModelStats from the last scrape's ListModels, as Prometheus families: core
    address -> its models, or None when it did not answer."""

    def __init__(self) -> None:
        self.cores: dict[str, Sequence[models_pb2.Model] | None] = {}

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "minerva_core_up",
            "1 when the bridge's last ListModels reached the core",
            labels=["core"],
        )
        for core, models in self.cores.items():
            up.add_metric([core], int(models is not None))
        yield up
        labels = ["core", "model"]
        loaded = GaugeMetricFamily(
            "minerva_core_model_loaded", "1 while the model is loaded", labels=labels
        )
        gauges = {
            name: GaugeMetricFamily(f"minerva_core_{name}", text, labels=labels)
            for name, text in (
                ("queue_depth", "Requests waiting for a slot"),
                ("active_sequences", "Sequences generating or reading their prompt"),
                ("slots", "Sequences the model generates at once"),
            )
        }
        totals = {
            name: CounterMetricFamily(f"minerva_core_{name}", text, labels=labels)
            for name, text in (
                ("prefill_tokens", "Prompt tokens evaluated since the model loaded"),
                ("decode_tokens", "Tokens generated since the model loaded"),
                ("prefix_cache_hit_tokens", "Prompt tokens reused from cached prefixes"),
            )
        }
        for core, model in self._listed():
            is_loaded = model.load_state == models_pb2.LOAD_STATE_LOADED
            loaded.add_metric([core, model.id], int(is_loaded))
            if not model.HasField("stats"):
                continue
            for name, gauge in gauges.items():
                gauge.add_metric([core, model.id], getattr(model.stats, name))
            for name, total in totals.items():
                total.add_metric([core, model.id], getattr(model.stats, name))
        yield loaded
        yield from gauges.values()
        yield from totals.values()

    def _listed(self) -> Iterator[tuple[str, models_pb2.Model]]:
        for core, models in self.cores.items():
            for model in models or ():
                yield core, model


class BridgeMetrics:
    """Everything /metrics shows; one per application (no global registry)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "minerva_bridge_requests",
            "HTTP requests answered, by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "minerva_prompt_tokens",
            "Prompt tokens of answered requests",
            ["model"],
            registry=self.registry,
        )
        self.completion_tokens = Counter(
            "minerva_completion_tokens",
            "Tokens generated for answered requests",
            ["model"],
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "minerva_time_to_first_token_seconds",
            "From a request's arrival in the core to its first generated token",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inter_token_latency = Histogram(
            "minerva_inter_token_latency_seconds",
            "Between two consecutive tokens of one choice, as they reach the bridge",
            ["model"],
            buckets=_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.core = CoreModels()
        self.registry.register(self.core)

    def observe_generation(self, model: str, final: inference_pb2.GenerationFinal) -> None:
        """Counts a finished generation's tokens and its time to first token (the core's)."""
        usage, timings = final.usage, final.timings
        self.prompt_tokens.labels(model).inc(usage.prompt_tokens)
        self.completion_tokens.labels(model).inc(usage.completion_tokens)
        if timings.time_to_first_token_ms > 0:
            self.time_to_first_token.labels(model).observe(timings.time_to_first_token_ms / 1000)

    def token_gaps(self, model: str) -> TokenGaps:
        """A timer for one generation call's inter-token latencies."""
        return TokenGaps(self.inter_token_latency, model)

    def observe_embedding(self, model: str, prompt_tokens: int) -> None:
        self.prompt_tokens.labels(model).inc(prompt_tokens)


class TokenGaps:
    """Times one generation call's tokens as the core's messages bring them (one token per
    chunk): each gap between two tokens of the same choice is one observation, so a choice of
    k tokens gives k - 1. Measured where the bridge reads the gRPC stream, before writing to the
    client; the core streams every generation, so answers sent whole are timed too."""

    def __init__(
        self, histogram: Histogram, model: str, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self._histogram = histogram
        self._model = model
        self._clock = clock
        self._last: dict[int, float] = {}

    def saw(self, event: inference_pb2.GenerateResponse | inference_pb2.ChatResponse) -> None:
        """Called with every message of the call, as it arrives."""
        if event.WhichOneof("event") != "chunk" or not event.chunk.token_ids:
            return  # a final, or text held back until the end: no new token
        now, index = self._clock(), event.chunk.index
        last = self._last.get(index)
        if last is not None:
            # Labelled only now: a model name that never produced two tokens adds no series.
            self._histogram.labels(self._model).observe(now - last)
        self._last[index] = now


def endpoint_of(request: web.Request) -> str:
    """The route's pattern (never the raw path: ids would make unbounded label values)."""
    route = request.match_info.route
    resource = route.resource
    return resource.canonical if resource is not None else "unmatched"


def metrics_middleware(metrics: BridgeMetrics) -> Middleware:
    """Counts every answered request; outermost, so it sees the status clients got."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except ApiError as error:
            status = error.status
            raise
        except web.HTTPException as error:
            status = error.status
            raise
        except ConnectionResetError:
            status = 499
            raise
        finally:
            metrics.requests.labels(endpoint_of(request), str(status)).inc()

    return middleware


async def scrape(request: web.Request) -> web.Response:
    metrics, clients = request.app[METRICS], routing.cores(request)
    started = time.perf_counter()
    listings = await asyncio.gather(*(_models_of(client) for client in clients))
    metrics.core.cores = dict(zip((c.address for c in clients), listings, strict=True))
    log.debug("metrics: cores read in %.1f ms", (time.perf_counter() - started) * 1000)
    body = generate_latest(metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def _models_of(client: CoreClient) -> list[models_pb2.Model] | None:
    """One core's models, or None when it fails or takes longer than SCRAPE_TIMEOUT_S (a core
    that is down costs a scrape that long at most, and the others are still shown)."""
    try:
        call = client.models.ListModels(
            models_pb2.ListModelsRequest(), metadata=client.metadata, timeout=SCRAPE_TIMEOUT_S
        )
        listing = await asyncio.wait_for(call, SCRAPE_TIMEOUT_S)
    except (grpc.aio.AioRpcError, TimeoutError) as error:
        log.debug("metrics: core %s not read: %r", client.address, error)
        return None
    return list(listing.models)


def setup(app: web.Application) -> None:
    app.router.add_get("/metrics", scrape)
