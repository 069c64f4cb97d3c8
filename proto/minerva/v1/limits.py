"""The limits of the minerva.v1 contract, in one place: the core enforces them, and the bridge
checks the same numbers where it reads a request, so both answer alike (each naming the field
in its own dialect). Documented beside each field in the .proto files."""

from __future__ import annotations

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
