"""How long an idle model stays loaded: the server's idle TTL, or what a request asked for.

Ollama's keep_alive semantics: each request that says how long to keep the model sets it from
then on (a request that does not say goes back to the server's default); 0 unloads the model as
soon as no request uses it; a negative value keeps it loaded until told otherwise.
"""

from __future__ import annotations

import math

# Longest and shortest pause between two looks for idle models.
MAX_REAP_INTERVAL_S = 30.0
MIN_REAP_INTERVAL_S = 0.25


class Default:
    """Marks a lease that says nothing about keep-alive (tokenizer calls, internal leases)."""


UNCHANGED = Default()
# What a request may say: None (the server's idle TTL) or seconds (0: at once, < 0: never).
KeepAlive = float | None


def idle_ttl(requested: KeepAlive, server_ttl: float) -> float:
    """Seconds an idle model stays loaded; math.inf for never (server TTL 0 means never)."""
    if requested is None:
        return server_ttl if server_ttl > 0 else math.inf
    return math.inf if requested < 0 else requested


def reap_interval(ttls: list[float]) -> float:
    """How often to look for idle models, so none outlives its TTL by much."""
    finite = [t for t in ttls if math.isfinite(t) and t > 0]
    if not finite:
        return MAX_REAP_INTERVAL_S
    return min(MAX_REAP_INTERVAL_S, max(MIN_REAP_INTERVAL_S, min(finite) / 2))
