"""The limits of the minerva.v1 contract, in one place: the core enforces them, and the bridge
checks the same numbers where it reads a request, so both answer alike (each naming the field
in its own dialect). Documented beside each field in the .proto files."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Range:
    """The values a number field takes: [low, high], or (low, high] when low_open."""

    low: float
    high: float
    low_open: bool = False

    def __contains__(self, value: float) -> bool:
        # NaN fails every comparison and infinities fall outside: no isfinite, which would
        # raise on an integer too large for a float.
        above_low = value > self.low if self.low_open else value >= self.low
        return above_low and value <= self.high

    def __str__(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"

    def admits_float32(self, value: float) -> bool:
        """Whether `value`, once in a proto float field (32 bits: 1e-50 arrives as 0, 2.000000001
        as 2), is in range: the test a client's JSON number passes exactly when the core, which
        reads the field, would accept it."""
        return float32(value) in self


def float32(value: float) -> float:
    """The value a proto float field set to `value` carries (beyond float32's range: infinite)."""
    try:
        packed = struct.pack("<f", float(value))
    except OverflowError:
        return math.inf if value > 0 else -math.inf
    return float(struct.unpack("<f", packed)[0])


# SamplingParams' float fields. top_p 0 is greedy: llama.cpp's top-p keeps at least one token.
# repeat_penalty 1 disables it; llama.cpp divides positive logits by it, so 0 is out.
SAMPLING_RANGES: dict[str, Range] = {
    "temperature": Range(0.0, 2.0),
    "top_p": Range(0.0, 1.0),
    "min_p": Range(0.0, 1.0),
    "repeat_penalty": Range(0.0, 10.0, low_open=True),
    "presence_penalty": Range(-2.0, 2.0),
    "frequency_penalty": Range(-2.0, 2.0),
}
# SamplingParams.top_k (an int32); 0 disables it.
MIN_TOP_K = 0
MAX_TOP_K = INT32_MAX

# SamplingParams
MAX_STOPS = 16
MAX_STOP_CHARS = 256
MAX_CHOICES = 16
MAX_TOP_LOGPROBS = 20
LOGIT_BIAS_LIMIT = 100.0
# sampling.grammar / sampling.json_schema text, in UTF-8 bytes.
MAX_CONSTRAINT_BYTES = 64 * 1024

# ChatRequest / GenerateRequest
MAX_SESSION_CHARS = 128
MAX_TOOLS = 128

# EmbedRequest
MAX_EMBED_INPUTS = 2048
