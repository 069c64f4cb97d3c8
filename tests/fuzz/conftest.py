"""Hypothesis profiles for the fuzz tests: small under `make test`, long under `make fuzz`."""

from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import HealthCheck, settings

# Registered, never loaded globally: other suites' Hypothesis tests (schemathesis) keep theirs.
settings.register_profile(
    "minerva-quick",
    max_examples=60,
    # An input that makes a reader or handler loop over a lying count takes minutes, where every
    # example here takes milliseconds (the real model's header under 0.2 s): a deadline far
    # above a shared, loaded CPU's noise still catches it, without flaky failures.
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "minerva-fuzz",
    parent=settings.get_profile("minerva-quick"),
    max_examples=3000,
)
# MINERVA_FUZZ=1 (what `make fuzz` sets) runs the long profile.
PROFILE = "minerva-fuzz" if os.environ.get("MINERVA_FUZZ") else "minerva-quick"
FUZZ = settings(settings.get_profile(PROFILE))
