"""Rate limits both processes share: token buckets per caller (an API key, or a client address
when no keys are set) for requests and tokens per minute, and the facts a caller is told, under
OpenAI's header names, as HTTP headers by the bridge and as gRPC metadata by the core."""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Written as `rpm=60 tpm=100000` after a key in a key file; `unlimited` lifts one.
_FIELDS = {"rpm": "requests_per_minute", "tpm": "tokens_per_minute"}
UNLIMITED = "unlimited"
RETRY_AFTER = "retry-after"
HEADER_PREFIX = "x-ratelimit-"
# Callers remembered at once; the least recently seen is forgotten first (a full bucket).
MAX_CALLERS = 65536


class RateLimitSyntaxError(ValueError):
    """A limit that cannot be read, e.g. `rpm=ten`; the message names it."""


@dataclass(frozen=True)
class RateLimit:
    """Requests and tokens (prompt + completion) per minute; None is no limit."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None

    def __post_init__(self) -> None:
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise RateLimitSyntaxError(f"{name} must be at least 1, got {value}")

    @property
    def limited(self) -> bool:
        return self.requests_per_minute is not None or self.tokens_per_minute is not None


def parse_limit(words: Iterable[str], base: RateLimit, where: str) -> RateLimit:
    """`base` with `rpm=N` / `tpm=N` / `rpm=unlimited` words applied; errors name `where`."""
    values = {"requests_per_minute": base.requests_per_minute}
    values["tokens_per_minute"] = base.tokens_per_minute
    for word in words:
        name, sep, text = word.partition("=")
        if not sep or name not in _FIELDS:
            raise RateLimitSyntaxError(f"{where}: expected rpm=N or tpm=N, got {word!r}")
        if text == UNLIMITED:
            values[_FIELDS[name]] = None
        elif text.isdigit() and int(text) >= 1:
            values[_FIELDS[name]] = int(text)
        else:
            raise RateLimitSyntaxError(f"{where}: {name} must be a whole number >= 1, got {text!r}")
    return RateLimit(**values)


def go_duration(seconds: float) -> str:
    """OpenAI's reset format: `20ms`, `1.5s`, `6m0s`."""
    seconds = max(0, math.ceil(seconds * 1000)) / 1000  # whole milliseconds, rounded up
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{text}s" if minutes else f"{text}s"


@dataclass
class _Bucket:
    """`capacity` per minute, refilled continuously; tokens may run into debt (charged after
    the fact), at most one minute's worth."""

    capacity: int
    level: float
    updated: float

    @property
    def rate(self) -> float:
        return self.capacity / 60.0

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def seconds_until(self, level: float) -> float:
        return max(0.0, (level - self.level) / self.rate)


@dataclass(frozen=True)
class Standing:
    """One limit's facts for a caller: its size, what is left, and when it is full again."""

    kind: str  # "requests" or "tokens"
    limit: int
    remaining: int
    reset_s: float


@dataclass(frozen=True)
class Quota:
    """A caller's standing after admission; `refused_for` names the exhausted limit."""

    standings: tuple[Standing, ...] = ()
    refused_for: str | None = None
    retry_after_s: float = 0.0

    @property
    def allowed(self) -> bool:
        return self.refused_for is None

    def facts(self) -> dict[str, str]:
        """x-ratelimit-* (and retry-after when refused): HTTP headers and gRPC metadata alike."""
        out: dict[str, str] = {}
        for s in self.standings:
            out[f"{HEADER_PREFIX}limit-{s.kind}"] = str(s.limit)
            out[f"{HEADER_PREFIX}remaining-{s.kind}"] = str(s.remaining)
            out[f"{HEADER_PREFIX}reset-{s.kind}"] = go_duration(s.reset_s)
        if not self.allowed:
            out[RETRY_AFTER] = str(max(1, math.ceil(self.retry_after_s)))
        return out

    def message(self) -> str:
        limit = next(s.limit for s in self.standings if s.kind == self.refused_for)
        return (
            f"rate limit reached: {limit} {self.refused_for} per minute; "
            f"retry in {go_duration(self.retry_after_s)}"
        )


@dataclass
class RateLimiter:
    """Buckets per caller; `limits_by_key` overrides `default` for callers with that API key."""

    default: RateLimit
    limits_by_key: Mapping[str, RateLimit] = field(default_factory=dict, repr=False)
    clock: Callable[[], float] = time.monotonic
    max_callers: int = MAX_CALLERS
    _callers: OrderedDict[str, dict[str, _Bucket]] = field(default_factory=OrderedDict)

    @property
    def enabled(self) -> bool:
        return self.default.limited or any(lim.limited for lim in self.limits_by_key.values())

    def admit(self, key: str | None, address: str | None) -> Quota:
        """Takes one request from the caller's buckets when every limit allows it."""
        limit = self.limits_by_key.get(key, self.default) if key is not None else self.default
        if not limit.limited:
            return Quota()
        buckets = self._buckets(_caller(key, address), limit)
        now = self.clock()
        for bucket in buckets.values():
            bucket.refill(now)
        requests, tokens = buckets.get("requests"), buckets.get("tokens")
        if requests is not None and requests.level < 1:
            return self._quota(buckets, "requests", requests.seconds_until(1))
        if tokens is not None and tokens.level < 1:
            return self._quota(buckets, "tokens", tokens.seconds_until(1))
        if requests is not None:
            requests.level -= 1
        return self._quota(buckets, None, 0.0)

    def charge(self, key: str | None, address: str | None, tokens: int) -> None:
        """Takes the tokens a request used (known once it ends) from its caller's bucket."""
        buckets = self._callers.get(_caller(key, address))
        bucket = buckets.get("tokens") if buckets else None
        if bucket is not None and tokens > 0:
            bucket.refill(self.clock())
            bucket.level = max(-bucket.capacity, bucket.level - tokens)

    def _buckets(self, caller: str, limit: RateLimit) -> dict[str, _Bucket]:
        buckets = self._callers.get(caller)
        if buckets is None:
            now = self.clock()
            sizes = {"requests": limit.requests_per_minute, "tokens": limit.tokens_per_minute}
            buckets = {kind: _Bucket(n, n, now) for kind, n in sizes.items() if n is not None}
            self._callers[caller] = buckets
            while len(self._callers) > self.max_callers:
                self._callers.popitem(last=False)
        self._callers.move_to_end(caller)
        return buckets

    @staticmethod
    def _quota(buckets: dict[str, _Bucket], refused: str | None, retry_s: float) -> Quota:
        standings = tuple(
            Standing(kind, b.capacity, max(0, math.floor(b.level)), b.seconds_until(b.capacity))
            for kind, b in buckets.items()
        )
        return Quota(standings, refused, retry_s)


def _caller(key: str | None, address: str | None) -> str:
    return f"key:{key}" if key is not None else f"address:{address_group(address)}"


def address_group(address: str | None) -> str:
    """The bucket of a client without a key: its IPv4 address, or its IPv6 /64 (the share of
    one host or site: addresses within it are its own to pick, and would each get a bucket);
    an IPv4-mapped IPv6 address is its IPv4 one. Anything else (a unix socket) as given."""
    if not address:
        return "-"
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])  # without an IPv6 zone
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class TokenMeter:
    """Tokens one call used, from its response messages: a final's (or Embed's) usage, prompt
    plus completion, once it arrives; until then the tokens its chunks carried, so a call cut
    short (a client that disconnects) is still charged what it generated."""

    def __init__(self) -> None:
        self.tokens = 0
        self._reported = False

    def see(self, message: Any) -> None:
        fields = message.DESCRIPTOR.fields_by_name
        if "final" in fields and message.HasField("final"):
            self._report(message.final.usage)
        elif "usage" in fields and message.HasField("usage"):
            self._report(message.usage)
        elif "chunk" in fields and message.HasField("chunk") and not self._reported:
            self.tokens += len(message.chunk.token_ids)

    def _report(self, usage: Any) -> None:
        self.tokens, self._reported = int(usage.prompt_tokens + usage.completion_tokens), True
