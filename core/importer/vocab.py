"""A Hugging Face `tokenizer.json` (+ `tokenizer_config.json`) -> llama.cpp's vocabulary keys.

Two kinds of BPE tokenizer import:
- byte-level (GPT-2 style: Llama 3, Qwen2, SmolLM) becomes llama.cpp's "gpt2" vocabulary; the
  pre-tokenizer type it needs is recognised by the structure of the pre-tokenizer, and an unknown
  one is refused rather than guessed;
- SentencePiece style (`byte_fallback`, "▁" for spaces: Llama 2, Mistral 7B, TinyLlama) becomes
  its "llama" vocabulary: byte tokens `<0xNN>`, and scores from the merge ranks so that llama.cpp's
  best-pair-first merging replays the BPE merge order.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import InvalidModelFile, UnsupportedModel
from core.metadata.gguf_vocab import Vocabulary, llama_token_text
from core.metadata.safetensors_reader import (
    TOKENIZER_CONFIG_NAME,
    chat_template,
    load_json_file,
)
from core.metadata.vocab_check import vocabulary_problem

TOKENIZER_NAME = "tokenizer.json"

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")


_SPM_SPACE = "\u2581"  # "▁"
_BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")
# Below every merge rank: a multi-character token no merge makes is merged last, if ever.
_UNMERGED_SCORE = -1e9


class TokenType(enum.IntEnum):
    """llama.cpp's `tokenizer.ggml.token_type` values."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


class VocabKind(enum.Enum):
    """llama.cpp's `tokenizer.ggml.model`."""

    BYTE_LEVEL_BPE = "gpt2"
    SENTENCEPIECE_BPE = "llama"


@dataclass(frozen=True, slots=True)
class Vocab:
    kind: VocabKind
    tokens: list[str]
    types: list[int]
    merges: list[str]
    scores: list[float] | None  # SentencePiece style only
    add_space_prefix: bool | None  # SentencePiece style only
    pre: str | None  # llama.cpp's tokenizer.ggml.pre (byte-level only)
    bos: int | None
    eos: int | None
    pad: int | None
    unk: int | None
    add_bos: bool
    add_eos: bool
    chat_template: str | None


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table: the 256 base tokens of byte-level BPE."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return dict(sorted(table.items()))


def _check_closed(tokens: list[str], merges: list[str], path: Path) -> None:
    """Every merge joins two tokens into a third, all three in the vocabulary: the tokenizers
    library refuses to load a BPE model otherwise, and so do we. (Byte tokens may be missing:
    real vocabularies drop bytes that never occur, and llama.cpp skips them.)"""
    present = set(tokens)
    for merge in merges:
        first, second = merge.split(" ")
        for part in (first, second, first + second):
            if part not in present:
                raise _fail(path, f"merge {merge!r} needs {part!r}, which is not in the vocabulary")


def _fail(path: Path, what: str) -> InvalidModelFile:
    return InvalidModelFile(f"{path}: invalid tokenizer: {what}")


def _byte_level(step: dict[str, object], *, use_regex: bool) -> bool:
    return step.get("type") == "ByteLevel" and step.get("use_regex", True) is use_regex


def _split_regex(step: dict[str, object]) -> str | None:
    pattern = step.get("pattern")
    if step.get("type") != "Split" or not isinstance(pattern, dict):
        return None
    regex = pattern.get("Regex")
    return regex if isinstance(regex, str) else None


def pre_tokenizer_type(pre: object, path: Path) -> str:
    """llama.cpp's name for a byte-level pre-tokenizer, told by its structure."""
    steps: list[object] = [pre]
    if isinstance(pre, dict) and pre.get("type") == "Sequence":
        inner = pre.get("pretokenizers")
        steps = inner if isinstance(inner, list) else []
    if not steps or not all(isinstance(s, dict) for s in steps):
        raise UnsupportedModel(
            f"{path}: pre-tokenizer {pre!r} is not byte-level BPE; only byte-level BPE "
            "tokenizers (GPT-2 style) can be imported"
        )
    parts: list[dict[str, object]] = [s for s in steps if isinstance(s, dict)]
    if len(parts) == 1 and _byte_level(parts[0], use_regex=True):
        return "gpt-2"
    if len(parts) == 2 and _byte_level(parts[1], use_regex=True):
        first = parts[0]
        if first.get("type") == "Digits" and first.get("individual_digits") is True:
            return "smollm"
    if len(parts) == 2 and _byte_level(parts[1], use_regex=False):
        regex = _split_regex(parts[0])
        if regex == _LLAMA3_SPLIT:
            return "llama-bpe"
        if regex == _QWEN2_SPLIT:
            return "qwen2"
    kinds = [p.get("type") for p in parts]
    raise UnsupportedModel(
        f"{path}: pre-tokenizer {kinds!r} is not one llama.cpp knows; recognised: ByteLevel "
        "(gpt-2), Digits+ByteLevel (smollm), Llama 3 and Qwen2 Split+ByteLevel"
    )


def _merges(model: dict[str, object], path: Path) -> list[str]:
    raw = model.get("merges", [])
    if not isinstance(raw, list):
        raise _fail(path, "model.merges is not a list")
    merges: list[str] = []
    for merge in raw:
        if isinstance(merge, str) and merge.count(" ") == 1:
            merges.append(merge)
        elif (
            isinstance(merge, list)
            and len(merge) == 2
            and all(isinstance(m, str) and m and " " not in m for m in merge)
        ):
            merges.append(f"{merge[0]} {merge[1]}")
        else:
            raise _fail(path, f"merge {merge!r} is not a pair of tokens")
    return merges


def _token_table(
    doc: dict[str, object], model: dict[str, object], path: Path, size: int
) -> tuple[list[str], list[int]]:
    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        raise _fail(path, "model.vocab is not a non-empty object")
    by_id: dict[int, tuple[str, TokenType]] = {}
    for text, token_id in vocab.items():
        if not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0:
            raise _fail(path, f"token {text!r} has id {token_id!r}")
        by_id[token_id] = (text, TokenType.NORMAL)
    added = doc.get("added_tokens", [])
    if not isinstance(added, list):
        raise _fail(path, "added_tokens is not a list")
    for entry in added:
        content = entry.get("content") if isinstance(entry, dict) else None
        token_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(content, str) or not isinstance(token_id, int) or token_id < 0:
            raise _fail(path, f"added token {entry!r} lacks a content string or an id")
        special = entry.get("special") is True
        by_id[token_id] = (content, TokenType.CONTROL if special else TokenType.USER_DEFINED)
    top = max(by_id) + 1
    if top > size:
        raise _fail(
            path, f"token id {top - 1} does not fit the model's vocab_size {size} (config.json)"
        )
    tokens, types = [], []
    for token_id in range(size):
        text, kind = by_id.get(token_id, (f"[PAD{token_id}]", TokenType.UNUSED))
        # llama.cpp reads tokens as C strings and aborts the process on a repeated one.
        if not text or "\0" in text:
            raise _fail(path, f"token {token_id} is empty or holds a NUL character")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a JSON escape
            raise _fail(path, f"token {token_id} is not valid Unicode") from None
        tokens.append(text)
        types.append(int(kind))
    if len(set(tokens)) != len(tokens):
        raise _fail(path, "the vocabulary holds the same token twice")
    return tokens, types


def _token_text(value: object) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _special_id(
    name: str, tok_config: dict[str, object], config: dict[str, object], ids: dict[str, int]
) -> int | None:
    text = _token_text(tok_config.get(f"{name}_token"))
    if text is not None and text in ids:
        return ids[text]
    value = config.get(f"{name}_token_id")
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, int) and 0 <= value < len(ids) else None


def _adds_bos(doc: dict[str, object], tok_config: dict[str, object], bos: int | None) -> bool:
    """tokenizer_config's add_bos_token, else whether the post-processor prepends BOS."""
    explicit = tok_config.get("add_bos_token")
    if isinstance(explicit, bool):
        return explicit
    if bos is None:
        return False
    processors = [doc.get("post_processor")]
    while processors:
        proc = processors.pop()
        if not isinstance(proc, dict):
            continue
        if proc.get("type") == "Sequence" and isinstance(proc.get("processors"), list):
            processors.extend(proc["processors"])
        elif proc.get("type") == "TemplateProcessing":
            single = proc.get("single")
            first = single[0] if isinstance(single, list) and single else None
            special = first.get("SpecialToken") if isinstance(first, dict) else None
            specials = proc.get("special_tokens")
            special_id = special.get("id") if isinstance(special, dict) else None
            if isinstance(special_id, str) and isinstance(specials, dict):
                entry = specials.get(special_id)
                ids = entry.get("ids") if isinstance(entry, dict) else None
                return ids == [bos]
    return False


def _steps(component: object) -> list[dict[str, object]]:
    """The steps of a normalizer or pre-tokenizer, a Sequence flattened."""
    if not isinstance(component, dict):
        return []
    inner = component.get("normalizers", component.get("pretokenizers"))
    if component.get("type") == "Sequence" and isinstance(inner, list):
        return [step for s in inner for step in _steps(s)]
    return [component]


def _space_prefix(doc: dict[str, object], path: Path) -> bool:
    """Whether a SentencePiece-style tokenizer prepends "▁"; refuses one that does not turn
    spaces into "▁" at all (llama.cpp's "llama" vocabulary always does)."""
    steps = _steps(doc.get("normalizer")) + _steps(doc.get("pre_tokenizer"))
    replaces = prepends = False
    for step in steps:
        if step.get("type") == "Metaspace" and step.get("replacement", _SPM_SPACE) == _SPM_SPACE:
            replaces = True
            scheme = step.get("prepend_scheme")
            if scheme is None:
                scheme = "always" if step.get("add_prefix_space", True) else "never"
            prepends = prepends or scheme != "never"
        elif step.get("type") == "Prepend" and step.get("prepend") == _SPM_SPACE:
            prepends = True
        elif step.get("type") == "Replace" and step.get("content") == _SPM_SPACE:
            pattern = step.get("pattern")
            replaces = replaces or (isinstance(pattern, dict) and pattern.get("String") == " ")
    if not replaces:
        raise UnsupportedModel(
            f"{path}: a byte_fallback BPE tokenizer that does not turn spaces into '▁' "
            "cannot be imported"
        )
    return prepends


def _spm_types_and_scores(
    tokens: list[str], types: list[int], merges: list[str], unk: str | None
) -> list[float]:
    """Byte and unknown token types (in place), and a score per token from its merge rank."""
    for i, text in enumerate(tokens):
        if types[i] == TokenType.NORMAL and _BYTE_TOKEN.fullmatch(text):
            types[i] = TokenType.BYTE
        elif text == unk and types[i] in (TokenType.NORMAL, TokenType.CONTROL):
            types[i] = TokenType.UNKNOWN
    rank: dict[str, int] = {}
    for i, merge in enumerate(merges):
        first, second = merge.split(" ")
        rank.setdefault(first + second, i)
    return [
        -float(rank[t]) if t in rank else 0.0 if len(t) == 1 or k != TokenType.NORMAL
        else _UNMERGED_SCORE
        for t, k in zip(tokens, types, strict=True)
    ]  # fmt: skip


def _kind(model: dict[str, object], path: Path) -> VocabKind:
    if model.get("type") != "BPE":
        raise UnsupportedModel(
            f"{path}: tokenizer model {model.get('type')!r} cannot be imported; supported: BPE "
            "(byte-level, or SentencePiece style with byte_fallback)"
        )
    return (
        VocabKind.SENTENCEPIECE_BPE
        if model.get("byte_fallback") is True
        else (VocabKind.BYTE_LEVEL_BPE)
    )


def read_vocab(directory: Path, config: dict[str, object], vocab_size: int) -> Vocab:
    """The vocabulary of the tokenizer beside a checkpoint, padded to `vocab_size` rows."""
    path = directory / TOKENIZER_NAME
    if not path.is_file():
        raise _fail(directory, f"{TOKENIZER_NAME} is missing (only tokenizer.json can be imported)")
    doc = load_json_file(path)
    model = doc.get("model") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or not isinstance(model, dict):
        raise _fail(path, "no `model` object")
    kind = _kind(model, path)
    spm = kind is VocabKind.SENTENCEPIECE_BPE
    pre = None if spm else pre_tokenizer_type(doc.get("pre_tokenizer"), path)
    space_prefix = _space_prefix(doc, path) if spm else None
    tokens, types = _token_table(doc, model, path, vocab_size)
    tok_config_path = directory / TOKENIZER_CONFIG_NAME
    tok_config = load_json_file(tok_config_path) if tok_config_path.is_file() else {}
    if not isinstance(tok_config, dict):
        raise _fail(tok_config_path, "not a JSON object")
    merges = _merges(model, path)
    _check_closed(tokens, merges, path)
    unk_text = model.get("unk_token")
    scores = (
        _spm_types_and_scores(
            tokens, types, merges, unk_text if isinstance(unk_text, str) else None
        )
        if spm
        else None
    )
    ids = {text: i for i, text in enumerate(tokens)}
    bos = _special_id("bos", tok_config, config, ids)
    unk = _special_id("unk", tok_config, config, ids)
    if unk is None and isinstance(unk_text, str):  # the BPE model's own unk_token
        unk = ids.get(unk_text)
    add_eos = tok_config.get("add_eos_token")
    return Vocab(
        kind=kind,
        tokens=tokens,
        types=types,
        merges=merges,
        scores=scores,
        add_space_prefix=space_prefix,
        pre=pre,
        bos=bos,
        eos=_special_id("eos", tok_config, config, ids),
        pad=_special_id("pad", tok_config, config, ids),
        unk=unk,
        add_bos=_adds_bos(doc, tok_config, bos),
        add_eos=add_eos is True,
        chat_template=chat_template(directory),
    )


def check_imported_vocabulary(vocab: Vocab, directory: Path) -> None:
    """InvalidModelFile when llama.cpp could not survive the vocabulary the import would write
    (the loaded GGUF is checked again, core.metadata.vocab_check): found before converting."""
    texts = tuple(llama_token_text(t.encode("utf-8"), i) for i, t in enumerate(vocab.tokens))
    problem = vocabulary_problem(Vocabulary(vocab.kind.value, texts))
    if problem is not None:
        raise _fail(directory / TOKENIZER_NAME, problem)
