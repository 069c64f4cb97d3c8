"""Rate limits end to end with the openai SDK: the bridge's own limit (x-ratelimit-* headers, a
429 the SDK raises as RateLimitError with Retry-After), and the core's limit shown through it
(the bridge's own model-list refreshes are not inference calls: the core does not count them)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import MODEL, start_stack

HELLO: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "Hi"}]


def test_the_bridge_limits_requests_per_client(tmp_path: Path, models_dir: Path) -> None:
    stack = start_stack(tmp_path / "logs", models_dir, [], ["--rate-limit-rpm", "2"], None)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(stack.stop)
        client = cleanup.enter_context(stack.client())
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=HELLO, max_tokens=2
        )
        assert raw.parse().choices[0].message.content is not None
        assert raw.headers["x-ratelimit-limit-requests"] == "2"
        assert raw.headers["x-ratelimit-remaining-requests"] == "1"
        assert (
            client.models.with_raw_response.list().headers["x-ratelimit-remaining-requests"] == "0"
        )
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
        assert caught.value.status_code == 429
        assert int(caught.value.response.headers["retry-after"]) >= 1
        assert "2 requests per minute" in caught.value.message
        assert stack.http("GET", "/health").status == 200  # probes are never counted


def test_the_cores_limit_reaches_the_client_with_its_facts(
    tmp_path: Path, models_dir: Path
) -> None:
    stack = start_stack(tmp_path / "logs", models_dir, ["--rate-limit-rpm", "1"], [], None)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(stack.stop)
        client = cleanup.enter_context(stack.client())
        reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
        assert reply.usage is not None and reply.usage.completion_tokens >= 1
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2)
        headers = caught.value.response.headers
        assert headers["x-ratelimit-limit-requests"] == "1"
        assert int(headers["retry-after"]) >= 30  # the core's figure, not the bridge's default 1
