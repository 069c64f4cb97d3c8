"""A GGUF's tokenizer as llama.cpp will read it: model name, token texts, normalizer map."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gguf

from core.metadata.gguf_cursor import VT, Cursor, open_header, read_preamble, read_value, skip_array


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """A GGUF's tokenizer as llama.cpp will read it (core.metadata.vocab_check judges it)."""

    model: str  # tokenizer.ggml.model: "gpt2", "llama", "rwkv", ... ("" when absent)
    # Token texts as C strings (cut at the first NUL); an empty one is "[EMPTY_<id>]".
    tokens: tuple[bytes, ...]
    # tokenizer.ggml.precompiled_charsmap (SentencePiece's normalizer, for "t5"), when a byte array.
    charsmap: bytes = b""


def read_vocabulary(path: Path) -> Vocabulary:
    """The tokenizer model and token texts; the header is read again, other arrays skipped.
    A token list that is not of strings reads as empty (llama.cpp refuses it with an error)."""
    model, charsmap = "", b""
    tokens: tuple[bytes, ...] = ()
    with open_header(path) as cur:
        _, kv_count = read_preamble(cur)
        for index in range(kv_count):
            key = cur.name(f"key of KV pair {index}")
            vtype = cur.u32(f"value type of {key!r}")
            if vtype != VT.ARRAY:
                value = read_value(cur, vtype, key)
                if key == gguf.Keys.Tokenizer.MODEL and isinstance(value, str):
                    model = value
            elif key == gguf.Keys.Tokenizer.PRECOMPILED_CHARSMAP:
                charsmap = _byte_array(cur, key)
            elif key != gguf.Keys.Tokenizer.LIST:
                skip_array(cur, key)
            elif cur.u32(f"array type of {key!r}") == VT.STRING:
                tokens = _token_texts(cur, cur.u64(f"array length of {key!r}"), key)
            else:
                cur.pos -= 4
                skip_array(cur, key)
    return Vocabulary(model, tokens, charsmap)


def _byte_array(cur: Cursor, key: str) -> bytes:
    """An array of (u)int8 as bytes; any other array is skipped and reads as empty (llama.cpp
    refuses it with an error)."""
    start = cur.pos
    if cur.u32(f"array type of {key!r}") not in (VT.UINT8, VT.INT8):
        cur.pos = start
        skip_array(cur, key)
        return b""
    count = cur.u64(f"array length of {key!r}")
    cur.need(count, f"array {key!r}")
    cur.pos += count
    return bytes(cur.buf[cur.pos - count : cur.pos])


def _token_texts(cur: Cursor, count: int, key: str) -> tuple[bytes, ...]:
    if count > (cur.size - cur.pos) // 8:
        raise cur.fail(f"array {key!r} has {count} strings, more than the file can hold", cur.pos)
    texts = []
    for i in range(count):
        n = cur.u64(f"array {key!r} item {i}")
        cur.need(n, f"array {key!r} item {i}")
        texts.append(llama_token_text(bytes(cur.buf[cur.pos : cur.pos + n]), i))
        cur.pos += n
    return tuple(texts)


def llama_token_text(raw: bytes, token_id: int) -> bytes:
    """A token's text as llama.cpp reads it: a C string (to the first NUL); an empty one is
    "[EMPTY_<id>]"."""
    return raw.partition(b"\0")[0] or b"[EMPTY_%d]" % token_id
