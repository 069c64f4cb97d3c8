"""The gRPC status -> HTTP table (one row per code), param mapping and the boundary translator."""

from __future__ import annotations

import grpc
import pytest

from rest_bridge import errors
from tests.bridge.conftest import rpc_error

ADDRESS = "127.0.0.1:50051"

# grpc-gateway's HTTPStatusFromCode: one row per status code.
EXPECTED_HTTP = [
    (grpc.StatusCode.CANCELLED, 499),
    (grpc.StatusCode.UNKNOWN, 500),
    (grpc.StatusCode.INVALID_ARGUMENT, 400),
    (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    (grpc.StatusCode.NOT_FOUND, 404),
    (grpc.StatusCode.ALREADY_EXISTS, 409),
    (grpc.StatusCode.PERMISSION_DENIED, 403),
    (grpc.StatusCode.UNAUTHENTICATED, 401),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    (grpc.StatusCode.FAILED_PRECONDITION, 400),
    (grpc.StatusCode.ABORTED, 409),
    (grpc.StatusCode.OUT_OF_RANGE, 400),
    (grpc.StatusCode.UNIMPLEMENTED, 501),
    (grpc.StatusCode.INTERNAL, 500),
    (grpc.StatusCode.UNAVAILABLE, 503),
    (grpc.StatusCode.DATA_LOSS, 500),
]


@pytest.mark.parametrize(("code", "status"), EXPECTED_HTTP, ids=lambda v: getattr(v, "name", v))
def test_status_table_row(code: grpc.StatusCode, status: int) -> None:
    error = errors.from_rpc_error(rpc_error(code, "details here"), ADDRESS, "prompt")
    assert error.status == status
    assert errors.STATUS_TABLE[code].status == status
    body = error.body()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    assert body["code"] == errors.STATUS_TABLE[code].code
    assert body["type"] == errors.STATUS_TABLE[code].type
    assert (body["type"] == "server_error") == (status >= 500)
    assert ("Retry-After" in error.headers()) == (status in (429, 503))  # worth retrying soon


def test_every_error_code_has_a_row() -> None:
    assert set(errors.STATUS_TABLE) == set(grpc.StatusCode) - {grpc.StatusCode.OK}
    assert {code for code, _ in EXPECTED_HTTP} == set(errors.STATUS_TABLE)


def test_retry_after_value() -> None:
    error = errors.from_rpc_error(rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED), ADDRESS, "prompt")
    assert error.headers() == {"Retry-After": str(errors.RETRY_AFTER_SECONDS)}
    assert error.body()["error"]["code"] == "rate_limit_exceeded"


def test_unavailable_names_the_core_address() -> None:
    error = errors.from_rpc_error(
        rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused"), ADDRESS, "prompt"
    )
    assert error.message == errors.CORE_UNAVAILABLE


def test_message_is_the_core_details_unchanged() -> None:
    error = errors.from_rpc_error(
        rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "temperature 9 is out of range"), ADDRESS, "x"
    )
    assert error.message == "temperature 9 is out of range"


@pytest.mark.parametrize(
    ("core_param", "input_name", "openai"),
    [
        ("model_id", "prompt", "model"),
        ("prompt", "prompt", "prompt"),
        ("text", "prompt", "prompt"),
        ("token_ids", "prompt", "prompt"),
        ("prompt", "messages", "messages"),
        ("messages", "messages", "messages"),
        ("inputs", "input", "input"),
        ("text", "input", "input"),
        ("token_ids", "input", "input"),
        ("sampling.temperature", "prompt", "temperature"),
        ("sampling.max_tokens", "prompt", "max_tokens"),
        ("sampling.logit_bias", "prompt", "logit_bias"),
        ("sampling.seed", "prompt", "seed"),
        ("sampling.stop", "prompt", "stop"),
        ("sampling.top_k", "prompt", "top_k"),
        ("sampling.n", "messages", "n"),
        ("sampling.top_logprobs", "messages", "top_logprobs"),
        ("sampling.top_logprobs", "prompt", "logprobs"),
        ("sampling.logprobs", "messages", "logprobs"),
        ("sampling.logprobs", "prompt", "logprobs"),
        ("sampling.json_schema", "messages", "response_format"),
        ("sampling.json_schema", "prompt", "response_format"),
        ("sampling.grammar", "messages", "grammar"),
        ("sampling.grammar", "prompt", "grammar"),
        ("session_id", "messages", "x-session-affinity"),
        ("something_new", "prompt", "something_new"),
        (None, "prompt", None),
    ],
)
def test_core_param_becomes_openai_param(
    core_param: str | None, input_name: str, openai: str | None
) -> None:
    error = rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "bad", core_param)
    assert errors.from_rpc_error(error, ADDRESS, input_name).param == openai


def test_param_found_among_other_trailing_metadata() -> None:
    trailing = grpc.aio.Metadata(("other", "x"), ("minerva-param", "sampling.top_p"))
    error = grpc.aio.AioRpcError(grpc.StatusCode.INVALID_ARGUMENT, grpc.aio.Metadata(), trailing)
    assert errors.from_rpc_error(error, ADDRESS, "prompt").param == "top_p"


async def test_translator_raises_api_error_from_rpc_error() -> None:
    with pytest.raises(errors.ApiError) as caught:
        async with errors.translate_grpc_errors(ADDRESS, "input"):
            raise rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "token 99999 not in vocab", "inputs")
    assert (caught.value.status, caught.value.param) == (400, "input")
    assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)


async def test_translator_leaves_other_exceptions_alone() -> None:
    with pytest.raises(KeyError):
        async with errors.translate_grpc_errors(ADDRESS):
            raise KeyError("x")


def test_bad_request_envelope() -> None:
    body = errors.BadRequest("'temperature' must be a number", "temperature").body()
    assert body == {
        "error": {
            "message": "'temperature' must be a number",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "invalid_value",
        }
    }
