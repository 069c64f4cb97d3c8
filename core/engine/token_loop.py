"""The synchronous token loop for one request: prompt evaluation, sampling, stop strings, timings."""

from __future__ import annotations

import codecs
import threading
import time
from collections.abc import Callable

from core.engine.llama_backend import LlamaModel
from core.engine.stop import StopMatcher
from core.engine.types import FinishReason, GenerationRequest, GenerationResult, Timings, TokenChunk


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


class _Clock:
    """Marks of one request's life, turned into Timings at the end."""

    def __init__(self, arrived: float) -> None:
        self.arrived = arrived
        self.started = time.perf_counter()
        self.prompt_done = self.started
        self.first_token = 0.0

    def timings(self, evaluated: int, generated: int) -> Timings:
        end = time.perf_counter()
        prompt_s = self.prompt_done - self.started
        decode_s = end - self.first_token if self.first_token else 0.0
        after_first = max(generated - 1, 0)
        return Timings(
            queue_ms=_ms(self.started - self.arrived),
            time_to_first_token_ms=_ms(self.first_token - self.arrived)
            if self.first_token
            else 0.0,
            prompt_ms=_ms(prompt_s),
            decode_ms=_ms(decode_s),
            decode_tokens_per_second=round(after_first / decode_s, 2)
            if decode_s > 0 and after_first
            else 0.0,
            prompt_tokens_per_second=round(evaluated / prompt_s, 2) if prompt_s > 0 else 0.0,
            total_ms=_ms(end - self.arrived),
        )


def run_generation(
    model: LlamaModel,
    request: GenerationRequest,
    emit: Callable[[TokenChunk], None],
    cancelled: threading.Event,
) -> GenerationResult:
    """Generate until EOG, a stop string, max_tokens or cancellation; checks `cancelled` every token."""
    clock = _Clock(request.arrived)
    prompt = list(request.prompt)
    cached = model.reuse_prefix(prompt)
    if not model.decode(prompt[cached:], cancelled):
        return _result(request, FinishReason.CANCELLED, cached, 0, clock)
    clock.prompt_done = time.perf_counter()

    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    stops = StopMatcher(request.sampling.stop)
    chain = model.new_sampler(request.sampling, prompt)  # frees itself if building fails
    generated, finish, matched = 0, FinishReason.LENGTH, ""
    try:
        while generated < request.max_tokens:
            if cancelled.is_set():
                finish = FinishReason.CANCELLED
                break
            token = model.sample(chain)
            if not clock.first_token:
                clock.first_token = time.perf_counter()
            if model.is_eog(token):
                finish = FinishReason.STOP
                break
            generated += 1
            result = stops.feed(decoder.decode(model.piece(token)))
            emit(TokenChunk(result.emit, (token,)))
            if result.matched is not None:
                finish, matched = FinishReason.STOP, result.matched
                break
            if generated < request.max_tokens:
                model.decode((token,))
    finally:
        model.free_sampler(chain)
    if finish is not FinishReason.CANCELLED and not matched:
        tail = stops.feed(decoder.decode(b"", final=True)).emit + stops.flush()
        if tail:
            emit(TokenChunk(tail, ()))
    return _result(request, finish, cached, generated, clock, matched)


def _result(
    request: GenerationRequest,
    finish: FinishReason,
    cached: int,
    generated: int,
    clock: _Clock,
    matched: str = "",
) -> GenerationResult:
    prompt = len(request.prompt)
    return GenerationResult(
        finish_reason=finish,
        prompt_tokens=prompt,
        completion_tokens=generated,
        cached_tokens=cached,
        timings=clock.timings(prompt - cached, generated),
        matched_stop=matched,
    )
