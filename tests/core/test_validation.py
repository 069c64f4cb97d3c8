"""Every validation error is INVALID_ARGUMENT (or NOT_FOUND) before any work, naming the field."""

from __future__ import annotations

import grpc
import pytest
from minerva.v1 import inference_pb2 as pb

from tests.conftest import DEFAULT_MODEL_ID
from tests.core.conftest import Client

pytestmark = pytest.mark.asyncio(loop_scope="session")

M = DEFAULT_MODEL_ID
USER = [pb.ChatMessage(role="user", content="Hi")]

GENERATE_CASES = [
    ("temperature", pb.SamplingParams(temperature=2.5), "sampling.temperature"),
    ("top_p", pb.SamplingParams(top_p=1.5), "sampling.top_p"),
    ("top_k", pb.SamplingParams(top_k=-1), "sampling.top_k"),
    ("min_p", pb.SamplingParams(min_p=-0.1), "sampling.min_p"),
    ("repeat_penalty", pb.SamplingParams(repeat_penalty=0.0), "sampling.repeat_penalty"),
    ("presence", pb.SamplingParams(presence_penalty=2.5), "sampling.presence_penalty"),
    ("frequency", pb.SamplingParams(frequency_penalty=-3.0), "sampling.frequency_penalty"),
    ("nan", pb.SamplingParams(temperature=float("nan")), "sampling.temperature"),
    ("max_tokens_zero", pb.SamplingParams(max_tokens=0), "sampling.max_tokens"),
    ("too_many_stops", pb.SamplingParams(stop=[str(i) for i in range(17)]), "sampling.stop"),
    ("empty_stop", pb.SamplingParams(stop=[""]), "sampling.stop"),
    ("bias_value", pb.SamplingParams(logit_bias={5: 150.0}), "sampling.logit_bias"),
    ("bias_token", pb.SamplingParams(logit_bias={10_000_000: 1.0}), "sampling.logit_bias"),
    ("n_zero", pb.SamplingParams(n=0), "sampling.n"),
    ("n_too_many", pb.SamplingParams(n=17), "sampling.n"),
    ("n_beyond_slots", pb.SamplingParams(n=9), "sampling.n"),
    ("top_logprobs", pb.SamplingParams(logprobs=True, top_logprobs=21), "sampling.top_logprobs"),
    ("top_without_logprobs", pb.SamplingParams(top_logprobs=2), "sampling.top_logprobs"),
]


async def expect_error(call: grpc.aio.UnaryStreamCall) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in call:
            pass
    return err.value


async def param_of(error: grpc.aio.AioRpcError) -> str:
    return dict(await_trailing(error)).get("minerva-param", "")


def await_trailing(error: grpc.aio.AioRpcError) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in (error.trailing_metadata() or ()) if isinstance(v, str))


@pytest.mark.parametrize(
    ("sampling", "param"), [pytest.param(s, p, id=i) for i, s, p in GENERATE_CASES]
)
async def test_invalid_sampling_is_invalid_argument(
    client: Client, sampling: pb.SamplingParams, param: str
) -> None:
    error = await expect_error(
        client.inference.Generate(pb.GenerateRequest(model_id=M, text="Hi", sampling=sampling))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await param_of(error) == param
    assert error.details()


async def test_n_beyond_slots_names_the_slots(client: Client) -> None:
    call = client.inference.Generate(
        pb.GenerateRequest(model_id=M, text="Hi", sampling=pb.SamplingParams(n=9))
    )
    error = await expect_error(call)
    assert "at most 8 sequences" in (error.details() or "")


async def test_overlong_session_id_is_invalid_argument(client: Client) -> None:
    call = client.inference.Chat(pb.ChatRequest(model_id=M, messages=USER, session_id="s" * 129))
    error = await expect_error(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await param_of(error) == "session_id"


async def test_prompt_longer_than_context(client: Client) -> None:
    error = await expect_error(
        client.inference.Generate(pb.GenerateRequest(model_id=M, text="word " * 3000))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await param_of(error) == "prompt"
    assert "2048" in (error.details() or "")


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        pytest.param(pb.GenerateRequest(model_id=M), "prompt", id="empty-prompt"),
        pytest.param(
            pb.GenerateRequest(model_id=M, token_ids=pb.TokenIds(ids=[1, 99_999_999])),
            "prompt",
            id="oov-prompt",
        ),
    ],
)
async def test_bad_prompts(client: Client, request_: pb.GenerateRequest, param: str) -> None:
    error = await expect_error(client.inference.Generate(request_))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await param_of(error) == param


@pytest.mark.parametrize(
    "messages",
    [
        pytest.param([], id="empty"),
        pytest.param([pb.ChatMessage(role="wizard", content="hi")], id="bad-role"),
        pytest.param([pb.ChatMessage(role="user", content="")], id="empty-user-content"),
    ],
)
async def test_bad_messages(client: Client, messages: list[pb.ChatMessage]) -> None:
    error = await expect_error(client.inference.Chat(pb.ChatRequest(model_id=M, messages=messages)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await param_of(error) == "messages"


async def test_unknown_model_is_not_found_everywhere(client: Client) -> None:
    for call in (
        client.inference.Generate(pb.GenerateRequest(model_id="ghost", text="Hi")),
        client.inference.Chat(pb.ChatRequest(model_id="ghost", messages=USER)),
    ):
        assert (await expect_error(call)).code() == grpc.StatusCode.NOT_FOUND
    for unary in (
        client.inference.Tokenize(pb.TokenizeRequest(model_id="ghost", text="x")),
        client.inference.Embed(pb.EmbedRequest(model_id="ghost", inputs=[pb.EmbedInput(text="x")])),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await unary
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_detokenize_and_embed_reject_bad_input(client: Client) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.inference.Detokenize(pb.DetokenizeRequest(model_id=M, token_ids=[5, -3]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.inference.Embed(pb.EmbedRequest(model_id=M))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.inference.Embed(
            pb.EmbedRequest(model_id=M, inputs=[pb.EmbedInput(text="x" * 20000)])
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    too_many = [pb.EmbedInput(text="x")] * 2049
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.inference.Embed(pb.EmbedRequest(model_id=M, inputs=too_many))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "2048" in (err.value.details() or "")


async def test_unexpected_errors_are_internal_with_a_generic_message(
    client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from core.inference import Inference

    async def explode(*_args: object, **_kwargs: object) -> list[int]:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(Inference, "tokenize", explode)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.inference.Tokenize(pb.TokenizeRequest(model_id=M, text="x"))
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (err.value.details() or "")
    assert "secret internal detail" in caplog.text and "Traceback" in caplog.text
    # The server keeps serving everyone else.
    ok = await client.inference.Detokenize(pb.DetokenizeRequest(model_id=M, token_ids=[28]))
    assert ok.text == ","
