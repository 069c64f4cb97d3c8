"""Fake core stubs (scripted streams, real AioRpcError instances) and a bridge wired to them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient
from grpc_health.v1 import health_pb2
from minerva.v1 import inference_pb2, models_pb2

from rest_bridge.app import create_app
from rest_bridge.core_client import CoreClient, auth_metadata
from rest_bridge.settings import Settings

CORE_ADDRESS = "127.0.0.1:59999"
MODEL_ID = "smollm2-135m-instruct-q4_1"
FINGERPRINT = "fp-1234"
# A stream item that never completes: the call blocks until cancelled.
HANG = object()


def rpc_error(
    code: grpc.StatusCode, details: str = "failed", param: str | None = None
) -> Exception:
    trailing = grpc.aio.Metadata(("minerva-param", param)) if param else grpc.aio.Metadata()
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details=details)


def chunk(
    text: str,
    *ids: int,
    index: int = 0,
    logprobs: Sequence[inference_pb2.SampledLogprob] = (),
) -> inference_pb2.GenerationChunk:
    return inference_pb2.GenerationChunk(
        text=text, token_ids=list(ids), index=index, logprobs=logprobs
    )


def token(text: str, logprob: float, token_id: int = 0) -> inference_pb2.TokenLogprob:
    """A token as the core reports it; its piece is its text's UTF-8 bytes."""
    return inference_pb2.TokenLogprob(
        token_id=token_id, text=text, piece=text.encode(), logprob=logprob
    )


def sampled(
    text: str, logprob: float, *top: tuple[str, float], token_id: int = 0
) -> inference_pb2.SampledLogprob:
    """A sampled token and its rivals, given as (text, logprob) most likely first."""
    return inference_pb2.SampledLogprob(
        token=token(text, logprob, token_id), top=[token(t, value) for t, value in top]
    )


def final(
    reason: inference_pb2.FinishReason = inference_pb2.FINISH_REASON_STOP,
    prompt: int = 7,
    completion: int = 3,
    cached: int = 2,
    choices: Sequence[inference_pb2.FinishReason] = (),
) -> inference_pb2.GenerationFinal:
    """A final; `choices` gives each choice's finish reason in index order, as the core does
    for any n (the top-level reason is then choice 0's). Without it: a core from before n."""
    return inference_pb2.GenerationFinal(
        finish_reason=choices[0] if choices else reason,
        usage=inference_pb2.Usage(
            prompt_tokens=prompt, completion_tokens=completion, cached_prompt_tokens=cached
        ),
        fingerprint=FINGERPRINT,
        choices=[
            inference_pb2.ChoiceEnd(index=index, finish_reason=end)
            for index, end in enumerate(choices)
        ],
    )


def interleaved(*texts: Sequence[str]) -> list[inference_pb2.GenerationChunk]:
    """Chunks of several choices in the order the core's step loop emits them: one piece of
    every choice still generating per step. texts[i] holds choice i's pieces."""
    steps = max(len(pieces) for pieces in texts)
    return [
        chunk(pieces[step], step + 1, index=index)
        for step in range(steps)
        for index, pieces in enumerate(texts)
        if step < len(pieces)
    ]


class FakeStreamCall:
    """Plays a script of chunks, finals, exceptions and HANG like a grpc.aio stream call."""

    def __init__(self, script: list[Any], response_type: type) -> None:
        self.script = script
        self.response_type = response_type
        self.cancelled = asyncio.Event()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._play()

    async def _play(self) -> AsyncIterator[Any]:
        for item in self.script:
            await asyncio.sleep(0)
            if item is HANG:
                await asyncio.Event().wait()
            elif isinstance(item, BaseException):
                raise item
            elif isinstance(item, inference_pb2.GenerationChunk):
                yield self.response_type(chunk=item)
            else:
                yield self.response_type(final=item)

    def cancel(self) -> bool:
        self.cancelled.set()
        return True


@dataclass
class FakeInference:
    """InferenceService stub: streams play `script` (indexed chunks and a final with choices for
    n > 1); every request is recorded, so tests see the sampling.n and session_id sent."""

    script: list[Any] = field(
        default_factory=lambda: [chunk("Hello", 1), chunk(" there", 2), final()]
    )
    embed_result: Any = None
    requests: list[Any] = field(default_factory=list)
    metadata: list[Any] = field(default_factory=list)
    calls: list[FakeStreamCall] = field(default_factory=list)
    called: asyncio.Event = field(default_factory=asyncio.Event)

    def Chat(self, request: Any, metadata: Any = ()) -> FakeStreamCall:
        return self._stream(request, metadata, inference_pb2.ChatResponse)

    def Generate(self, request: Any, metadata: Any = ()) -> FakeStreamCall:
        return self._stream(request, metadata, inference_pb2.GenerateResponse)

    def _stream(self, request: Any, metadata: Any, response_type: type) -> FakeStreamCall:
        self.requests.append(request)
        self.metadata.append(metadata)
        self.calls.append(FakeStreamCall(self.script, response_type))
        self.called.set()
        return self.calls[-1]

    async def Tokenize(self, request: Any, metadata: Any = ()) -> inference_pb2.TokenizeResponse:
        """Token i of the text is its i-th byte; pieces are those bytes."""
        self.requests.append(request)
        data = request.text.encode()
        pieces = [bytes([b]) for b in data] if request.with_pieces else []
        return inference_pb2.TokenizeResponse(token_ids=list(data), pieces=pieces)

    async def Detokenize(
        self, request: Any, metadata: Any = ()
    ) -> inference_pb2.DetokenizeResponse:
        self.requests.append(request)
        return inference_pb2.DetokenizeResponse(text=bytes(request.token_ids).decode())

    async def ApplyChatTemplate(
        self, request: Any, metadata: Any = ()
    ) -> inference_pb2.ApplyChatTemplateResponse:
        self.requests.append(request)
        prompt = "".join(f"<{m.role}>{m.content}" for m in request.messages)
        return inference_pb2.ApplyChatTemplateResponse(prompt=prompt, prompt_tokens=len(prompt))

    async def Embed(self, request: Any, metadata: Any = ()) -> inference_pb2.EmbedResponse:
        self.requests.append(request)
        self.metadata.append(metadata)
        if isinstance(self.embed_result, BaseException):
            raise self.embed_result
        return self.embed_result or inference_pb2.EmbedResponse(
            embeddings=[inference_pb2.Embedding(values=[0.5, -0.25, 1.0]) for _ in request.inputs],
            usage=inference_pb2.Usage(prompt_tokens=4 * len(request.inputs)),
        )


def sample_model(model_id: str = MODEL_ID) -> models_pb2.Model:
    return models_pb2.Model(
        id=model_id,
        metadata=models_pb2.ModelMetadata(
            format=models_pb2.MODEL_FORMAT_GGUF,
            architecture="llama",
            quantization="Q4_1",
            file_size_bytes=98_000_000,
            tensor_count=272,
            layer_count=30,
            embedding_length=576,
            vocab_size=49152,
            context_length=8192,
            parameter_count=134_515_008,
            has_chat_template=True,
            name="SmolLM2 135M Instruct",
        ),
        load_state=models_pb2.LOAD_STATE_LOADED,
        context_size=4096,
        fingerprint=FINGERPRINT,
        servable=True,
    )


@dataclass
class FakeModels:
    """ModelService stub over a fixed list of models, or one error for every call."""

    models: list[models_pb2.Model] = field(default_factory=lambda: [sample_model()])
    error: Exception | None = None
    requests: list[Any] = field(default_factory=list)

    async def ListModels(
        self,
        request: Any,
        metadata: Any = (),
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> models_pb2.ListModelsResponse:
        if self.error:
            raise self.error
        self.requests.append(request)
        compact = "MODEL|QUANT|SIZE_MB|TENSORS|LAYERS|VOCAB\n" if request.compact else ""
        return models_pb2.ListModelsResponse(models=self.models, compact=compact)

    async def GetModel(self, request: Any, metadata: Any = ()) -> models_pb2.GetModelResponse:
        if self.error:
            raise self.error
        self.requests.append(request)
        for model in self.models:
            if model.id == request.model_id:
                response = models_pb2.GetModelResponse(model=model)
                if request.with_header:
                    response.chat_template = "{{ messages }}"
                    arrays = ["a", "b"] if request.with_header_arrays else []
                    response.header_json = json.dumps(
                        {"general.architecture": "llama", "tokenizer.ggml.tokens": arrays}
                    )
                return response
        message = f"unknown model {request.model_id!r}"
        raise rpc_error(grpc.StatusCode.NOT_FOUND, message, "model_id")


    def LoadModel(self, request: Any, metadata: Any = ()) -> AsyncIterator[Any]:
        self.requests.append(request)
        return self._load(request)

    async def _load(self, request: Any) -> AsyncIterator[Any]:
        if self.error:
            raise self.error
        if request.model_id not in [m.id for m in self.models]:
            raise rpc_error(grpc.StatusCode.NOT_FOUND, "unknown model", "model_id")
        yield models_pb2.LoadModelResponse(stage=models_pb2.LOAD_STAGE_READY)

    async def UnloadModel(self, request: Any, metadata: Any = ()) -> Any:
        self.requests.append(request)
        return models_pb2.UnloadModelResponse(was_loaded=True)


@dataclass
class FakeHealth:
    """grpc.health.v1 stub answering one status, or raising one error."""

    status: int = health_pb2.HealthCheckResponse.SERVING
    error: Exception | None = None

    # Same signature as the generated stub, which takes a per-call timeout.
    async def Check(
        self,
        request: Any,
        metadata: Any = (),
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Any:
        if self.error:
            raise self.error
        return health_pb2.HealthCheckResponse(status=self.status)


@dataclass
class FakeCore:
    inference: FakeInference = field(default_factory=FakeInference)
    models: FakeModels = field(default_factory=FakeModels)
    health: FakeHealth = field(default_factory=FakeHealth)

    def client(self, core_api_key: str | None = None) -> CoreClient:
        return CoreClient(
            address=CORE_ADDRESS,
            models=self.models,
            inference=self.inference,
            health=self.health,
            metadata=auth_metadata(core_api_key),
        )


MakeBridge = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def core() -> FakeCore:
    return FakeCore()


@pytest.fixture
def make_bridge(aiohttp_client: Any, core: FakeCore) -> MakeBridge:
    """Starts the bridge app (through aiohttp's test server) on the fake core."""

    async def make(**settings: Any) -> TestClient:
        full = Settings(core_address=CORE_ADDRESS, **settings)
        client: TestClient = await aiohttp_client(create_app(full, core.client(full.core_api_key)))
        return client

    return make


@pytest.fixture
async def bridge(make_bridge: MakeBridge) -> TestClient:
    return await make_bridge()


def sse_events(body: str) -> list[Any]:
    """Splits an SSE body into its `data:` payloads (JSON, or the literal [DONE])."""
    events = []
    for block in body.split("\n\n"):
        if not block:
            continue
        assert block.startswith("data: "), block
        data = block.removeprefix("data: ")
        events.append(data if data == "[DONE]" else json.loads(data))
    return events
