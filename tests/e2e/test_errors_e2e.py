"""Errors through both processes, as the openai SDK's typed exceptions; 413, 429, core failures."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from rest_bridge.errors import CORE_UNAVAILABLE
from tests.e2e.conftest import MODEL, MakeStack, Stack

pytestmark = pytest.mark.e2e

QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hi"}]
# A prompt the model continues for as long as it is allowed to.
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8,"
RECOVERY_TIMEOUT_S = 60.0


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": [str(i) for i in range(17)]}, "stop"),
        ({"logit_bias": {"999999": 5}}, "logit_bias"),
        ({"messages": []}, "messages"),
    ],
)
def test_bad_requests_are_400(client: openai.OpenAI, extra: dict[str, Any], param: str) -> None:
    request: dict[str, Any] = {"model": MODEL, "messages": QUESTION, "max_tokens": 2, **extra}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**request)
    assert caught.value.status_code == 400
    assert caught.value.param == param


def test_out_of_vocabulary_prompt_token_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt=[1, 999_999], max_tokens=2)
    assert caught.value.param == "prompt"


def test_malformed_json_is_400(stack: Stack) -> None:
    response = stack.http("POST", "/v1/chat/completions", b"{nope")
    assert response.status == 400
    assert response.json["error"]["type"] == "invalid_request_error"


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=QUESTION, max_tokens=2)
    assert caught.value.param == "model"


def test_wrong_key_is_401(stack: Stack) -> None:
    bad = openai.OpenAI(base_url=stack.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.models.list()
    assert caught.value.code == "invalid_api_key"
    assert stack.http("GET", "/health").status == 200


def test_body_over_the_limit_is_413(stack: Stack) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]}
    response = stack.http("POST", "/v1/chat/completions", json.dumps(body).encode())
    assert response.status == 413
    assert response.json["error"]["code"] == "request_too_large"


def test_full_queue_is_429_with_retry_after(make_stack: MakeStack) -> None:
    own = make_stack(core_args=("--queue-size", "0", "--slots", "1"))
    client = own.client()
    with client.completions.create(
        model=MODEL, prompt=COUNTING, max_tokens=300, temperature=0, stream=True
    ) as running:
        next(iter(running))  # the first request now holds the model
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2)
    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.code == "rate_limit_exceeded"


def test_core_killed_mid_stream_is_an_api_error(make_stack: MakeStack) -> None:
    own = make_stack()
    stream = own.client().completions.create(
        model=MODEL, prompt=COUNTING, max_tokens=400, temperature=0, stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].text)
            if len(received) == 3:
                own.core.stop(signal.SIGKILL)
    assert len(received) >= 3
    assert not isinstance(caught.value, openai.APIStatusError)  # it came inside a 200 stream
    assert CORE_UNAVAILABLE in caught.value.message


def test_core_restart_gives_503_then_recovers(make_stack: MakeStack) -> None:
    own = make_stack()
    client = own.client()
    assert client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2).choices
    own.core.stop()
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2)
    assert caught.value.status_code == 503
    assert CORE_UNAVAILABLE in caught.value.message
    assert str(own.core.port) not in caught.value.message
    assert own.http("GET", "/health").status == 503
    own.core.restart()
    _wait_for_health(own)
    reply = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2)
    assert reply.usage is not None and reply.usage.completion_tokens >= 1


def _wait_for_health(stack: Stack) -> None:
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while time.monotonic() < deadline:
        if stack.http("GET", "/health").status == 200:
            return
        time.sleep(0.2)
    pytest.fail("the bridge did not reconnect to the restarted core")
