"""Vocabularies llama.cpp cannot survive: the RWKV tokenizer's dead ends and its unescaping."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest

from core.errors import InvalidModelFile
from core.metadata.gguf_vocab import Vocabulary, read_vocabulary
from core.metadata.vocab_check import (
    RWKV,
    SPM,
    UGM,
    charsmap_problem,
    check_vocabulary,
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


def charsmap(nodes: int = 512, value: int = 0, replacements: bytes = b"A\0") -> bytes:
    """A normalizer map as SentencePiece lays it out: "a" -> "A". The root (node 0, base 0)
    leads by "a" to node 97, a leaf whose base 256 points at node 353, which holds the offset
    of the replacement."""
    array = np.zeros(nodes, dtype="<u4")
    array[97] = 97 | 1 << 8 | 256 << 10  # LCHECK "a", LEAF, BASE 256
    if nodes > 353:
        array[353] = value
    blob = array.tobytes()
    return struct.pack("<I", len(blob)) + blob + replacements


def t5(map_bytes: bytes) -> Vocabulary:
    return Vocabulary(UGM, (b"<pad>", b"</s>", b"<unk>", b"a"), map_bytes)


def test_a_normalizer_map_every_text_can_walk_is_accepted() -> None:
    # Checked against llama.cpp: this map tokenizes "abc" and "xyz é"; each broken one below
    # terminates the process on "a" (XCDA out of bounds, replacement offset, unterminated).
    assert charsmap_problem(t5(charsmap())) is None
    assert charsmap_problem(Vocabulary("gpt2", (b"a",), charsmap(nodes=300))) is None


@pytest.mark.parametrize(
    ("broken", "said"),
    [
        (charsmap(nodes=300), "replacement node 353 is past its 300 entries"),
        (charsmap(nodes=200), "sends byte 0xc8 from node 0 past its 200 entries"),
        (charsmap(value=100), "replacement at offset 100 that is not a string"),
        (charsmap(replacements=b"A"), "replacement at offset 0 that is not a string"),
    ],
)
def test_a_normalizer_map_some_text_walks_out_of_is_refused(broken: bytes, said: str) -> None:
    problem = charsmap_problem(t5(broken))
    assert problem is not None and said in problem


def test_the_charsmap_is_read_from_the_file(tmp_path: Path) -> None:
    writer = gguf.GGUFWriter(tmp_path / "t5.gguf", "t5")
    writer.add_tokenizer_model("t5")
    writer.add_token_list(["<pad>", "a"])
    map_bytes = charsmap(nodes=300)
    writer.add_key_value(
        gguf.Keys.Tokenizer.PRECOMPILED_CHARSMAP,
        list(map_bytes),
        gguf.GGUFValueType.ARRAY,
        sub_type=gguf.GGUFValueType.UINT8,
    )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    vocab = read_vocabulary(tmp_path / "t5.gguf")
    assert vocab.charsmap == map_bytes
    with pytest.raises(InvalidModelFile, match="its precompiled_charsmap has a match"):
        check_vocabulary(tmp_path / "t5.gguf")
