"""How long an idle model stays loaded, and how often the reaper looks."""

from __future__ import annotations

import math

import pytest

from core.keep_alive import MAX_REAP_INTERVAL_S, MIN_REAP_INTERVAL_S, idle_ttl, reap_interval


@pytest.mark.parametrize(
    ("requested", "server", "expected"),
    [
        (None, 900.0, 900.0),
        (None, 0.0, math.inf),
        (0.0, 900.0, 0.0),
        (-1.0, 900.0, math.inf),
        (5.0, 0.0, 5.0),
    ],
)
def test_idle_ttl(requested: float | None, server: float, expected: float) -> None:
    assert idle_ttl(requested, server) == expected


def test_reap_interval_follows_the_shortest_ttl() -> None:
    assert reap_interval([]) == MAX_REAP_INTERVAL_S
    assert reap_interval([math.inf, 600.0]) == MAX_REAP_INTERVAL_S
    assert reap_interval([math.inf, 4.0, 10.0]) == 2.0
    assert reap_interval([0.01]) == MIN_REAP_INTERVAL_S
