"""OpenAI's int64 `seed` -> the core's uint32 seed (llama.cpp samples with 32 bits)."""

from __future__ import annotations

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# llama.cpp's LLAMA_DEFAULT_SEED: it means "pick a random seed", so no seed may map to it.
RANDOM_SEED = 2**32 - 1
_MASK64 = 2**64 - 1


def core_seed(seed: int) -> int:
    """Seeds in [0, 2**32 - 2] pass unchanged, so they reproduce what other llama.cpp servers
    give for them. Any other int64 (negative, or 2**32 - 1 and above) goes through splitmix64
    and is reduced modulo 2**32 - 1, which never gives the random-seed value: no simple
    arithmetic (seed % 2**32 would send 2**32 to 0 and -1 to the random seed) makes two seeds
    collide."""
    if 0 <= seed < RANDOM_SEED:
        return seed
    return splitmix64(seed & _MASK64) % RANDOM_SEED


def splitmix64(value: int) -> int:
    """Sebastiano Vigna's splitmix64 finaliser of one 64-bit value: a bijection that mixes
    every input bit into every output bit."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)
