"""Vocabularies llama.cpp cannot survive, refused before it sees them: it would take the whole
process down with them (an abort while loading, an exception thrown through its C API while
tokenizing a client's text, or a tokenizer loop that allocates until memory runs out)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import InvalidModelFile
from core.metadata.gguf_vocab import Vocabulary, read_vocabulary

RWKV = "rwkv"
UGM = "t5"  # SentencePiece's unigram model, with its normalizer's character map
SPM = "llama"  # SentencePiece (tokenizer.ggml.model)
# No tokenizer at all: llama.cpp loads the weights, then asserts on the first tokenize or piece.
NO_VOCAB = ("none", "no_vocab")
# Bytes that occur in UTF-8 text (all our prompts are): 0xc0, 0xc1 and 0xf5.. never do.
UTF8_BYTES = (*range(0xC0), *range(0xC2, 0xF5))


def check_vocabulary(path: Path) -> None:
    """InvalidModelFile naming what llama.cpp would die of."""
    problem = vocabulary_problem(read_vocabulary(path))
    if problem is not None:
        raise InvalidModelFile(f"{path}: {problem}")


def vocabulary_problem(vocab: Vocabulary) -> str | None:
    """What llama.cpp would die of with this vocabulary, or None."""
    if vocab.model in NO_VOCAB:
        return (
            f"it has no tokenizer (tokenizer.ggml.model {vocab.model!r}); llama.cpp aborts on "
            "its first tokenize"
        )
    repeat = repeated_token(vocab)
    if repeat is not None:
        first, second, text = repeat
        return (
            f"its vocabulary lists the token {text[:64]!r} twice (ids {first} and {second}); "
            "llama.cpp cannot load such a file"
        )
    missing = spm_missing_byte(vocab)
    if missing is not None:
        return (
            f"its SentencePiece vocabulary has no byte token <0x{missing:02X}> (nor that byte as "
            "a token); llama.cpp aborts the process on text whose characters fall back to it"
        )
    charsmap = charsmap_problem(vocab)
    if charsmap is not None:
        return (
            f"its precompiled_charsmap {charsmap}; llama.cpp's tokenizer would throw through "
            "its C API on such text, terminating the process"
        )
    dead_end = rwkv_dead_end(vocab)
    if dead_end is not None:
        byte, token_id, text = dead_end
        return (
            f"its RWKV vocabulary has tokens starting with byte 0x{byte:02x} (such as id "
            f"{token_id}, {text[:64]!r}) but no token for that byte alone; llama.cpp's "
            "tokenizer would loop until memory runs out on text with that byte"
        )
    return None


def repeated_token(vocab: Vocabulary) -> tuple[int, int, bytes] | None:
    """The first token text listed twice: (first id, second id, text); None when all differ.
    (A GGML_ASSERT in llama.cpp's vocabulary load aborts on it.)"""
    seen: dict[bytes, int] = {}
    for i, text in enumerate(vocab.tokens):
        first = seen.setdefault(text, i)
        if first != i:
            return first, i, text
    return None


def spm_missing_byte(vocab: Vocabulary) -> int | None:
    """For a SentencePiece tokenizer: the first byte of UTF-8 text with no token to fall back to,
    None when every one has one or it is not SentencePiece.

    A character that is no token (nor merges into one) is emitted byte by byte, each as its
    "<0xXX>" token or else the token that is that byte alone, looked up with unordered_map::at:
    the std::out_of_range escapes llama_tokenize and terminates the process (measured, on "é")."""
    if vocab.model != SPM:
        return None
    tokens = set(vocab.tokens)
    for byte in UTF8_BYTES:
        if b"<0x%02X>" % byte not in tokens and (byte == 0 or bytes([byte]) not in tokens):
            return byte  # byte 0 alone is the empty text, which llama.cpp never maps
    return None


def rwkv_dead_end(vocab: Vocabulary) -> tuple[int, int, bytes] | None:
    """For an RWKV tokenizer: a byte of UTF-8 text that starts some token but is no token by
    itself, with the first such token (byte, id, escaped text); None when there is none or it
    is not RWKV.

    llama.cpp's RWKV tokenizer walks a trie of the tokens for the longest match; when the text's
    next byte starts a path that holds no token it appends token 0 and goes back to the start of
    the text, forever (measured: std::bad_alloc, the process aborts). Every path's first node
    holding a token makes it advance at least one byte. (A byte no token starts with gives the
    unknown token, -1 for RWKV: core.engine.vocab refuses that text.)"""
    if vocab.model != RWKV:
        return None
    texts = [rwkv_unescape(t) for t in vocab.tokens]
    alone = {t[0] for t in texts if len(t) == 1}
    reachable = set(UTF8_BYTES)
    for i, text in enumerate(texts):
        if text and text[0] in reachable and text[0] not in alone:
            return text[0], i, vocab.tokens[i]
    return None


def rwkv_unescape(escaped: bytes) -> bytes:
    """A token's bytes as llama.cpp's llama_unescape_rwkv_token makes them (\\t \\n \\r, \\xHH,
    backslash before anything else), byte arithmetic included, its `char` signed as on x86."""
    out = bytearray()
    escaping, hex_left, acc = False, 0, 0
    for c in escaped:
        if hex_left:
            value = c - 87 if 97 <= c < 128 else c - 48  # 'a' - 10 / '0', not checked
            acc = ((acc << 4) + value) & 0xFF
            hex_left -= 1
            if not hex_left:
                out.append(acc)
                acc = 0
        elif escaping:
            escaping = False
            if c == ord("x"):
                hex_left = 2
            else:
                out.append({ord("t"): 9, ord("n"): 10, ord("r"): 13}.get(c, c))
        elif c == ord("\\"):
            escaping = True
        else:
            out.append(c)
    return bytes(out)


def charsmap_problem(vocab: Vocabulary) -> str | None:
    """For a unigram ("t5") tokenizer: where walking its normalizer's character map for some
    UTF-8 text would read outside the map; None when no text can.

    llama.cpp checks only the map's size header when loading. Tokenizing then walks an
    XOR-compressed double array from the root, one byte of the text at a time, each read
    bounds-checked by throwing std::runtime_error, which terminates the process from inside
    llama_tokenize. So every state reachable from the root, with every byte text can hold, is
    walked here as llama.cpp walks it (node layout: llama-vocab.cpp xcda_array_view)."""
    if vocab.model != UGM or len(vocab.charsmap) < 4:
        return None  # no map: nothing walked (a short one llama.cpp refuses itself)
    blob = int.from_bytes(vocab.charsmap[:4], "little")
    if blob + 4 >= len(vocab.charsmap):
        return None  # llama.cpp refuses it while loading
    nodes = np.frombuffer(vocab.charsmap[4 : 4 + blob - blob % 4], dtype="<u4").astype(np.int64)
    if not len(nodes):
        return None
    replacements = vocab.charsmap[4 + blob :]
    strings_end = replacements.rfind(b"\0")  # a replacement must start before the last NUL
    labels = np.array([b for b in UTF8_BYTES if b], dtype=np.int64)  # 0 ends the walk
    root = _base(int(nodes[0]))
    seen, todo = {root}, [root]
    while todo:
        state = todo.pop()
        index = state ^ labels
        if int(index.max()) >= len(nodes):
            byte = int(labels[int(np.argmax(index >= len(nodes)))])
            return f"sends byte 0x{byte:02x} from node {state} past its {len(nodes)} entries"
        packed = nodes[index]
        child = packed & 0x800000FF == labels  # LCHECK (with bit 31, which never matches)
        for node, packed_node in zip(index[child].tolist(), packed[child].tolist(), strict=True):
            following = node ^ _base(packed_node)
            if packed_node >> 8 & 1:  # a leaf: its replacement's offset is read next
                problem = _replacement_problem(nodes, following, strings_end)
                if problem is not None:
                    return problem
            if following not in seen:
                seen.add(following)
                todo.append(following)
    return None


def _base(packed: int) -> int:
    return (packed >> 10) << ((packed & (1 << 9)) >> 6)


def _replacement_problem(nodes: np.ndarray, node: int, strings_end: int) -> str | None:
    if node >= len(nodes):
        return f"has a match whose replacement node {node} is past its {len(nodes)} entries"
    offset = int(nodes[node]) & 0x7FFFFFFF
    if offset > strings_end:  # past the end, or no NUL after it
        return f"has a replacement at offset {offset} that is not a string inside it"
    return None
