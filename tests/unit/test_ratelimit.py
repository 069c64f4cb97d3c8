"""Token buckets per caller, the facts told to callers, and limits read from key files."""

from __future__ import annotations

from pathlib import Path

import pytest
from minerva.v1 import inference_pb2 as pb
from minerva.v1.exposure import ExposureError, key_file_limits, read_key_file
from minerva.v1.ratelimit import (
    RateLimit,
    RateLimiter,
    RateLimitSyntaxError,
    TokenMeter,
    address_group,
    go_duration,
    parse_limit,
)

from core.services.ratelimit import peer_host


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(
    rpm: int | None = None, tpm: int | None = None, **by_key: RateLimit
) -> tuple[RateLimiter, Clock]:
    clock = Clock()
    return RateLimiter(RateLimit(rpm, tpm), by_key, clock=clock), clock


def test_requests_per_minute_refuse_the_one_over_and_say_when_to_retry() -> None:
    rl, clock = limiter(rpm=3)
    remaining = [
        rl.admit(None, "10.0.0.1").facts()["x-ratelimit-remaining-requests"] for _ in range(3)
    ]
    assert remaining == ["2", "1", "0"]
    refused = rl.admit(None, "10.0.0.1")
    assert refused.refused_for == "requests"
    facts = refused.facts()
    assert facts["retry-after"] == "20"  # one request comes back every 20 s at 3 per minute
    assert facts["x-ratelimit-limit-requests"] == "3"
    assert facts["x-ratelimit-reset-requests"] == "1m0s"
    assert "3 requests per minute" in refused.message()
    clock.now += 20
    assert rl.admit(None, "10.0.0.1").allowed


def test_each_caller_has_its_own_bucket() -> None:
    rl, _ = limiter(rpm=1)
    assert rl.admit(None, "10.0.0.1").allowed
    assert rl.admit(None, "10.0.0.2").allowed
    assert rl.admit("k1", None).allowed
    assert not rl.admit(None, "10.0.0.1").allowed
    assert not rl.admit("k1", None).allowed


def test_ipv6_clients_share_a_bucket_per_64() -> None:
    """Addresses within one /64 are the client's own to pick: they count as one caller."""
    rl, _ = limiter(rpm=1)
    assert rl.admit(None, "2001:db8:1:2::10").allowed
    assert not rl.admit(None, "2001:db8:1:2:ffff::99").allowed  # same /64
    assert rl.admit(None, "2001:db8:1:3::10").allowed  # the next /64
    assert rl.admit(None, "192.0.2.7").allowed
    assert not rl.admit(None, "::ffff:192.0.2.7").allowed  # the same IPv4 client


@pytest.mark.parametrize(
    ("address", "group"),
    [
        ("10.0.0.1", "10.0.0.1"),
        ("2001:db8::1", "2001:db8::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("unix:/run/minerva.sock", "unix:/run/minerva.sock"),
        (None, "-"),
    ],
)
def test_address_group(address: str | None, group: str) -> None:
    assert address_group(address) == group


def test_tokens_are_charged_after_the_fact_and_refuse_until_repaid() -> None:
    rl, clock = limiter(tpm=600)  # 10 tokens a second
    first = rl.admit("k", None)
    assert first.allowed and first.facts()["x-ratelimit-remaining-tokens"] == "600"
    rl.charge("k", None, 700)  # 100 in debt
    refused = rl.admit("k", None)
    assert refused.refused_for == "tokens"
    assert refused.facts()["retry-after"] == "11"  # back to 1 token: 101 tokens at 10/s
    assert refused.facts()["x-ratelimit-remaining-tokens"] == "0"
    clock.now += 10.1
    assert rl.admit("k", None).allowed


def test_a_debt_is_at_most_one_minute() -> None:
    rl, clock = limiter(tpm=60)
    rl.admit("k", None)
    rl.charge("k", None, 10**9)
    clock.now += 61
    assert rl.admit("k", None).allowed


def test_a_key_of_its_own_overrides_the_default_and_unlimited_is_no_limit() -> None:
    rl, _ = limiter(rpm=1, vip=RateLimit(requests_per_minute=3), free=RateLimit())
    assert [rl.admit("vip", None).allowed for _ in range(4)] == [True, True, True, False]
    assert all(rl.admit("free", None).allowed for _ in range(10))
    assert rl.admit("free", None).facts() == {}
    assert [rl.admit("other", None).allowed for _ in range(2)] == [True, False]


def test_no_limit_means_disabled() -> None:
    assert not limiter()[0].enabled
    assert limiter(tpm=5)[0].enabled
    assert RateLimiter(RateLimit(), {"k": RateLimit(1, None)}).enabled


def test_callers_beyond_the_cap_forget_the_least_recent() -> None:
    rl = RateLimiter(RateLimit(1, None), max_callers=2)
    for address in ("a", "b", "c"):
        assert rl.admit(None, address).allowed
    assert rl.admit(None, "a").allowed  # forgotten: a fresh bucket
    assert not rl.admit(None, "c").allowed


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0ms"),
        (0.0201, "21ms"),
        (1.5, "1.5s"),
        (12.0, "12s"),
        (60.0, "1m0s"),
        (361.25, "6m1.25s"),
    ],
)
def test_durations_are_written_as_openai_does(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_limit_words() -> None:
    base = RateLimit(60, 1000)
    assert parse_limit(["rpm=5"], base, "x") == RateLimit(5, 1000)
    assert parse_limit(["tpm=unlimited", "rpm=2"], base, "x") == RateLimit(2, None)
    for bad in ("rpm=0", "rpm=-1", "rpm=ten", "qps=3", "rpm"):
        with pytest.raises(RateLimitSyntaxError, match="line 3"):
            parse_limit([bad], base, "line 3")


def test_key_files_give_keys_their_own_limits(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# team keys\nplain-key\nbig-key rpm=600 tpm=unlimited\n\n  small-key tpm=10\n")
    assert read_key_file(path) == ("plain-key", "big-key", "small-key")
    limits = key_file_limits([path], RateLimit(60, 1000))
    assert limits == {"big-key": RateLimit(600, None), "small-key": RateLimit(60, 10)}


def test_a_bad_limit_in_a_key_file_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("k1\nk2 rpm=lots\n")
    with pytest.raises(ExposureError, match=r"keys line 2: rpm must be a whole number"):
        key_file_limits([path], RateLimit())


def test_the_meter_takes_a_finals_usage_else_the_tokens_chunks_carried() -> None:
    chunk = pb.GenerateResponse(chunk=pb.GenerationChunk(text="ab", token_ids=[5, 6]))
    final = pb.GenerateResponse(
        final=pb.GenerationFinal(usage=pb.Usage(prompt_tokens=10, completion_tokens=3))
    )
    cut_short = TokenMeter()
    for message in (chunk, chunk):
        cut_short.see(message)
    assert cut_short.tokens == 4
    whole = TokenMeter()
    for message in (chunk, chunk, final):
        whole.see(message)
    assert whole.tokens == 13
    embedded = TokenMeter()
    embedded.see(pb.EmbedResponse(usage=pb.Usage(prompt_tokens=7)))
    assert embedded.tokens == 7


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:10.0.0.1:5000", "10.0.0.1"),
        ("ipv6:[::1]:5000", "::1"),
        ("ipv6:%5B2001:db8::1%5D:5000", "2001:db8::1"),  # as grpcio writes it
        ("unix:/run/minerva.sock", "unix:/run/minerva.sock"),
    ],
)
def test_peer_host(peer: str, host: str) -> None:
    assert peer_host(peer) == host
