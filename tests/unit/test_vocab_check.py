"""Vocabularies llama.cpp cannot survive: the RWKV tokenizer's dead ends and its unescaping."""

from __future__ import annotations

import pytest

from core.metadata.gguf_reader import Vocabulary
from core.metadata.vocab_check import (
    RWKV,
    SPM,
    repeated_token,
    rwkv_dead_end,
    rwkv_unescape,
    spm_missing_byte,
)


@pytest.mark.parametrize(
    ("escaped", "raw"),
    [
        (b"abc", b"abc"),
        (b"\\n", b"\n"),
        (b"\\t\\r", b"\t\r"),
        (b"\\x0a\\xff", b"\n\xff"),
        (b"\\\\", b"\\"),
        (b"\\q", b"q"),
        (b"\\xG1", b"\x71"),  # llama.cpp does not check hex digits: ('G' - '0') << 4 + 1
        (b"\\x\xc3\xa9", b"\xa9"),  # nor bytes past 0x7f (signed chars), all mod 256
        (b"a\\", b"a"),  # a trailing backslash escapes nothing
    ],
)
def test_rwkv_tokens_unescape_as_llama_cpp_does(escaped: bytes, raw: bytes) -> None:
    assert rwkv_unescape(escaped) == raw


def rwkv(*tokens: bytes) -> Vocabulary:
    return Vocabulary(RWKV, tokens)


def test_a_byte_that_starts_tokens_needs_a_token_of_its_own() -> None:
    assert rwkv_dead_end(rwkv(b"a", b"b", b"ab", b"ba")) is None
    assert rwkv_dead_end(rwkv(b"a", b"ab", b"bc")) == (ord("b"), 2, b"bc")
    # Compared unescaped: "\n" alone is the escaped token \\n.
    assert rwkv_dead_end(rwkv(b"\\n", b"\\n\\n")) is None
    assert rwkv_dead_end(rwkv(b"x", b"\\n\\n")) == (10, 1, b"\\n\\n")
    # A byte no token starts with gives the unknown token (-1 for RWKV, which
    # core.engine.vocab refuses) and moves on; one UTF-8 text never holds is never met.
    assert rwkv_dead_end(rwkv(b"q")) is None
    assert rwkv_dead_end(rwkv(b"a", b"\\xff\\x41")) is None
    assert rwkv_dead_end(rwkv(b"a", b"\\xc3\\xa9")) == (0xC3, 1, b"\\xc3\\xa9")


def test_only_rwkv_vocabularies_are_walked_that_way() -> None:
    assert rwkv_dead_end(Vocabulary("gpt2", (b"ab",))) is None


def test_a_repeated_token_is_found_in_any_vocabulary() -> None:
    assert repeated_token(Vocabulary("llama", (b"a", b"b", b"a"))) == (0, 2, b"a")
    assert repeated_token(Vocabulary("llama", (b"a", b"b"))) is None


def spm(*tokens: bytes) -> Vocabulary:
    return Vocabulary(SPM, tokens)


ALL_BYTES = tuple(b"<0x%02X>" % b for b in range(256))


def test_sentencepiece_needs_a_token_for_every_byte_of_utf8_text() -> None:
    assert spm_missing_byte(spm(b"<unk>", *ALL_BYTES)) is None
    without = tuple(t for t in ALL_BYTES if t != b"<0xC3>")
    assert spm_missing_byte(spm(*without)) == 0xC3
    # The byte itself as a token is the fallback's fallback; byte 0 has none (empty text).
    assert spm_missing_byte(spm(*without, b"\xc3")) is None
    assert spm_missing_byte(spm(*ALL_BYTES[1:], b"")) == 0
    # Bytes UTF-8 never uses may be missing; lower-case hex is not what llama.cpp looks up.
    unused = (b"<0xC0>", b"<0xC1>", *(b"<0x%02X>" % b for b in range(0xF5, 0x100)))
    assert spm_missing_byte(spm(*(t for t in ALL_BYTES if t not in unused))) is None
    assert spm_missing_byte(spm(*(t.lower() if t == b"<0xAB>" else t for t in ALL_BYTES))) == 0xAB


def test_other_tokenizers_have_no_byte_fallback_to_check() -> None:
    assert spm_missing_byte(Vocabulary("gpt2", (b"a",))) is None
