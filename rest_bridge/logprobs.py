"""Pure builders of OpenAI logprobs objects (chat and legacy completions) from the core's."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from itertools import accumulate
from typing import Any

from minerva.v1 import inference_pb2

SampledLogprobs = Sequence[inference_pb2.SampledLogprob]


def collect(events: Iterable[Any]) -> dict[int, list[inference_pb2.SampledLogprob]]:
    """Each choice's sampled tokens over a whole generation stream, keyed by choice index."""
    picked: dict[int, list[inference_pb2.SampledLogprob]] = defaultdict(list)
    for event in events:
        if event.WhichOneof("event") == "chunk":
            picked[event.chunk.index].extend(event.chunk.logprobs)
    return dict(picked)


def chat(items: SampledLogprobs) -> dict[str, Any]:
    """Chat's `logprobs`: one entry per token, its rivals most likely first."""
    return {
        "content": [
            {**_chat_token(item.token), "top_logprobs": [_chat_token(top) for top in item.top]}
            for item in items
        ]
    }


def _chat_token(token: inference_pb2.TokenLogprob) -> dict[str, Any]:
    return {"token": token.text, "logprob": token.logprob, "bytes": list(token.piece)}


def completion(items: SampledLogprobs, offset: int = 0) -> dict[str, Any]:
    """Legacy completions' `logprobs`: parallel lists; `offset` is where the first token starts
    in the choice's generated text (a stream's later chunks continue from earlier ones)."""
    tokens = [item.token.text for item in items]
    return {
        "tokens": tokens,
        "token_logprobs": [item.token.logprob for item in items],
        "top_logprobs": [_top_map(item) for item in items],
        "text_offset": list(accumulate((len(text) for text in tokens), initial=offset))[:-1],
    }


def _top_map(item: inference_pb2.SampledLogprob) -> dict[str, float]:
    """text -> logprob of the rivals, plus the sampled token (OpenAI: up to logprobs + 1)."""
    rivals = {top.text: top.logprob for top in item.top}
    rivals.setdefault(item.token.text, item.token.logprob)
    return rivals


def text_length(items: SampledLogprobs) -> int:
    """Characters the tokens' texts span: how far a stream's text_offset moves on."""
    return sum(len(item.token.text) for item in items)
