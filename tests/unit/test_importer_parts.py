"""The importer's pure parts: config.json -> hyperparameters, tokenizer.json -> vocabulary,
checkpoint tensors -> GGUF tensor jobs, the cache key."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file

from core.errors import InvalidModelFile, UnsupportedModel
from core.importer.cache import ImportCache, identity_key, source_files
from core.importer.hparams import RopeKind, read_hparams
from core.importer.tensors import _permute, llama3_rope_factors, plan_tensors
from core.importer.vocab import (
    TokenType,
    VocabKind,
    check_imported_vocabulary,
    pre_tokenizer_type,
    read_vocab,
)
from core.metadata.safetensors_reader import tensor_entries
from core.settings import ImportType
from scripts.export_hf import unpermute
from scripts.hf_checkpoint import (
    BYTE_LEVEL,
    SMOLLM_PRE,
    Shape,
    config_json,
    tiny_checkpoint,
)

HERE = Path("config.json")
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _config(**changes: object) -> dict[str, object]:
    config = config_json(Shape(), "LlamaForCausalLM", tied=False)
    config.update(changes)
    return {k: v for k, v in config.items() if v is not None}


# ---- config.json ----------------------------------------------------------------------------


def test_hparams_from_a_llama_config() -> None:
    hp = read_hparams(_config(), HERE)
    assert (hp.layers, hp.hidden, hp.heads, hp.kv_heads, hp.head_dim) == (2, 64, 4, 2, 16)
    assert (hp.vocab_size, hp.context_length, hp.rope_theta) == (272, 512, 10000.0)
    assert hp.family.permute_qk and not hp.attention_bias and not hp.tied_embeddings


def test_defaults_follow_transformers() -> None:
    hp = read_hparams(
        _config(num_key_value_heads=None, head_dim=None, rope_theta=None, rms_norm_eps=None), HERE
    )
    assert (hp.kv_heads, hp.head_dim, hp.rope_theta, hp.rms_eps) == (4, 16, 10000.0, 1e-6)


def test_qwen2_has_biases_and_no_permutation() -> None:
    hp = read_hparams(_config(architectures=["Qwen2ForCausalLM"]), HERE)
    assert hp.attention_bias and not hp.family.permute_qk
    assert hp.family.arch is gguf.MODEL_ARCH.QWEN2


@pytest.mark.parametrize("arch", [["GPT2LMHeadModel"], ["LlamaForCausalLM", "X"], ["Gemma3"]])
def test_unknown_architectures_name_the_supported_list(arch: list[str]) -> None:
    with pytest.raises(UnsupportedModel, match="supported: LlamaForCausalLM, MistralForCausalLM"):
        read_hparams(_config(architectures=arch), HERE)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"architectures": None}, "`architectures` is missing"),
        ({"hidden_size": None}, "`hidden_size` is missing"),
        ({"num_hidden_layers": 0}, "`num_hidden_layers` must be a positive integer"),
        ({"num_attention_heads": "4"}, "`num_attention_heads` must be a positive integer"),
        ({"num_key_value_heads": 3}, "not a multiple of num_key_value_heads 3"),
        ({"rope_theta": float("nan")}, "`rope_theta` must be a number"),
        ({"tie_word_embeddings": "yes"}, "`tie_word_embeddings` must be true or false"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "original_max_position"),
    ],
)
def test_bad_configs_name_the_key(changes: dict[str, object], words: str) -> None:
    config = _config()
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    with pytest.raises(InvalidModelFile, match=re.escape(words)):
        read_hparams(config, HERE)


@pytest.mark.parametrize(
    ("scaling", "kind"),
    [
        ({"type": "linear", "factor": 2.0}, RopeKind.LINEAR),
        (
            {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096},
            RopeKind.YARN,
        ),
        (
            {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192},
            RopeKind.LLAMA3,
        ),
        ({"rope_type": "default"}, RopeKind.NONE),
    ],
)
def test_rope_scaling_kinds(scaling: dict[str, object], kind: RopeKind) -> None:
    assert read_hparams(_config(rope_scaling=scaling), HERE).rope.kind is kind


def test_unsupported_rope_scaling_and_activation_are_refused() -> None:
    with pytest.raises(UnsupportedModel, match="rope_scaling type 'longrope'"):
        read_hparams(_config(rope_scaling={"rope_type": "longrope", "factor": 2.0}), HERE)
    with pytest.raises(UnsupportedModel, match="hidden_act 'gelu'"):
        read_hparams(_config(hidden_act="gelu"), HERE)


def test_llama3_rope_factors_match_the_published_formula() -> None:
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}  # fmt: skip
    hp = read_hparams(_config(rope_scaling=scaling, rope_theta=500000.0, head_dim=128), HERE)
    factors = llama3_rope_factors(hp)
    assert factors.shape == (64,) and factors.dtype == np.float32
    for i, got in enumerate(factors):
        wavelen = 2 * math.pi * 500000.0 ** (2 * i / 128)
        if wavelen < 8192 / 4:
            want = 1.0
        elif wavelen > 8192:
            want = 8.0
        else:
            smooth = (8192 / wavelen - 1) / 3
            want = 1 / ((1 - smooth) / 8 + smooth)
        assert got == pytest.approx(want, rel=1e-6)
    assert factors[0] == 1.0 and factors[-1] == 8.0


# ---- tokenizer.json -------------------------------------------------------------------------


def _split(regex: str) -> dict[str, object]:
    return {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
            {**BYTE_LEVEL, "use_regex": False},
        ],
    }


@pytest.mark.parametrize(
    ("pre", "expected"),
    [
        (BYTE_LEVEL, "gpt-2"),
        (SMOLLM_PRE, "smollm"),
        (_split(LLAMA3_REGEX), "llama-bpe"),
        (_split(LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")), "qwen2"),
    ],
)
def test_known_pre_tokenizers(pre: object, expected: str) -> None:
    assert pre_tokenizer_type(pre, HERE) == expected


@pytest.mark.parametrize(
    "pre",
    [
        None,
        {"type": "Metaspace", "replacement": "▁"},
        _split(r"\s+"),
        {
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": False}, BYTE_LEVEL],
        },
    ],
)
def test_unknown_pre_tokenizers_are_refused_not_guessed(pre: object) -> None:
    with pytest.raises(UnsupportedModel):
        pre_tokenizer_type(pre, HERE)


def test_vocab_types_specials_and_padding(tmp_path: Path) -> None:
    tiny_checkpoint(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    vocab = read_vocab(tmp_path, config, 272)
    assert len(vocab.tokens) == len(vocab.types) == 272
    assert vocab.tokens[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert vocab.types[:3] == [TokenType.CONTROL] * 3
    assert vocab.types[3] == TokenType.NORMAL and vocab.tokens[3] == "Ā"  # byte 0x00
    assert vocab.tokens[-1] == "[PAD271]" and vocab.types[-1] == TokenType.UNUSED
    assert vocab.merges[0] == "h e" and len(vocab.merges) == 9
    assert (vocab.bos, vocab.eos, vocab.pad, vocab.unk) == (1, 2, 0, None)
    assert vocab.add_bos is False and vocab.pre == "gpt-2"
    assert vocab.chat_template and "<|im_start|>" in vocab.chat_template


def test_vocab_bigger_than_the_embeddings_is_refused(tmp_path: Path) -> None:
    tiny_checkpoint(tmp_path)
    with pytest.raises(InvalidModelFile, match="does not fit the model's vocab_size 100"):
        read_vocab(tmp_path, {}, 100)


def test_bos_from_the_post_processor_and_string_merges(tmp_path: Path) -> None:
    tiny_checkpoint(tmp_path)
    doc = json.loads((tmp_path / "tokenizer.json").read_text())
    doc["model"]["merges"] = [" ".join(m) for m in doc["model"]["merges"]]
    doc["post_processor"] = {
        "type": "Sequence",
        "processors": [
            {"type": "ByteLevel"},
            {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}],
                "special_tokens": {"<|im_start|>": {"id": "<|im_start|>", "ids": [1]}},
            },
        ],
    }
    (tmp_path / "tokenizer.json").write_text(json.dumps(doc))
    tok_config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    del tok_config["add_bos_token"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(tok_config))
    vocab = read_vocab(tmp_path, {}, 272)
    assert vocab.add_bos is True and vocab.merges[0] == "h e"


# ---- tensors --------------------------------------------------------------------------------


def test_permutation_round_trips_through_the_export() -> None:
    w = np.arange(2 * 8 * 3, dtype=np.float32).reshape(16, 3)
    permuted = _permute(2)(w)
    assert not np.array_equal(permuted, w)
    # Within each head, rows [0..3] (first halves) and [4..7] interleave: 0, 4, 1, 5, ...
    assert permuted[:8, 0].tolist() == [0, 12, 3, 15, 6, 18, 9, 21]
    assert np.array_equal(unpermute(permuted, 2), w)


def test_plan_names_types_and_sizes(tmp_path: Path) -> None:
    tiny_checkpoint(tmp_path, dtype="F16")
    entries, _ = tensor_entries(tmp_path)
    hp = read_hparams(json.loads((tmp_path / "config.json").read_text()), HERE)
    jobs = {j.name: j for j in plan_tensors(hp, entries, ImportType.Q8_0, tmp_path)}
    assert len(jobs) == 3 + 9 * 2
    assert jobs["token_embd.weight"].qtype is gguf.GGMLQuantizationType.Q8_0
    assert jobs["token_embd.weight"].nbytes == 272 * 64 // 32 * 34
    assert jobs["blk.0.attn_norm.weight"].qtype is gguf.GGMLQuantizationType.F32
    assert jobs["output.weight"].shape == (272, 64)
    assert jobs["blk.1.attn_q.weight"].transform is not None
    assert jobs["blk.1.attn_v.weight"].transform is None


def test_unexpected_tensors_and_dtypes_are_named(tmp_path: Path) -> None:
    tiny_checkpoint(tmp_path)
    entries, _ = tensor_entries(tmp_path)
    hp = read_hparams(json.loads((tmp_path / "config.json").read_text()), HERE)
    extra = dict(entries)
    extra["model.layers.0.mlp.extra.weight"] = entries["model.norm.weight"]
    with pytest.raises(
        InvalidModelFile, match=re.escape("'model.layers.0.mlp.extra.weight' is not part")
    ):
        plan_tensors(hp, extra, ImportType.F16, tmp_path)
    missing = {k: v for k, v in entries.items() if k != "lm_head.weight"}
    with pytest.raises(InvalidModelFile, match=re.escape("'lm_head.weight' is missing")):
        plan_tensors(hp, missing, ImportType.F16, tmp_path)
    norm = entries["model.norm.weight"]
    as_f64 = {**entries, "model.norm.weight": replace(norm, dtype="F64", nbytes=norm.nbytes * 4)}
    with pytest.raises(UnsupportedModel, match=re.escape("is F64; importable: F32, F16, BF16")):
        plan_tensors(hp, as_f64, ImportType.F16, tmp_path)


def test_written_checkpoints_read_back_with_the_safetensors_library(tmp_path: Path) -> None:
    weights = tiny_checkpoint(tmp_path, dtype="F16")
    loaded = load_file(tmp_path / "model.safetensors")
    assert set(loaded) == set(weights)
    for name, values in loaded.items():
        assert values.dtype == np.float16 and np.array_equal(
            values.astype(np.float32), weights[name]
        )


# ---- cache ----------------------------------------------------------------------------------


def test_cache_key_follows_the_sources_type_and_version(tmp_path: Path) -> None:
    tiny_checkpoint(tmp_path)
    files = source_files(tmp_path, [tmp_path / "model.safetensors"])
    assert {f.name for f in files} == {
        "config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors",
    }  # fmt: skip
    key = identity_key(files, ImportType.F16, 1)
    assert identity_key(files, ImportType.F16, 1) == key
    assert identity_key(files, ImportType.Q8_0, 1) != key
    assert identity_key(files, ImportType.F16, 2) != key
    st = (tmp_path / "tokenizer.json").stat()
    os.utime(tmp_path / "tokenizer.json", ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert identity_key(files, ImportType.F16, 1) != key


def test_cache_writes_atomically_and_drops_older_conversions(tmp_path: Path) -> None:
    cache = ImportCache(tmp_path / "cache")
    cache.directory.mkdir()
    source = tmp_path / "model"
    old, new = (
        cache.path_for(source, ImportType.F16, "a" * 16),
        cache.path_for(source, ImportType.F16, "b" * 16),
    )
    other = cache.path_for(source, ImportType.Q8_0, "a" * 16)
    old.write_bytes(b"old")
    other.write_bytes(b"q8")
    with pytest.raises(RuntimeError), cache.writing(new) as temp:
        temp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert not new.exists() and not list(cache.directory.glob("*.partial"))
    with cache.writing(new) as temp:
        temp.write_bytes(b"new")
    cache.remove_older(source, ImportType.F16, new)
    assert new.read_bytes() == b"new" and not old.exists() and other.exists()


# ---- hostile checkpoints --------------------------------------------------------------------


def _edit_tokenizer(directory: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads((directory / "tokenizer.json").read_text())
    edit(doc)
    (directory / "tokenizer.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda d: d["model"]["vocab"].pop("hello"), "merge 'hell o' needs 'hello'"),
        (lambda d: d["model"]["merges"].append(["zz", "q"]), "merge 'zz q' needs 'zz'"),
        (lambda d: d["model"]["merges"].append("a b c"), "is not a pair of tokens"),
        (lambda d: d["model"]["vocab"].update({"x": 10**9}), "does not fit the model's vocab_size"),
    ],
)
def test_vocabularies_llama_cpp_would_trip_on_are_refused(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], words: str
) -> None:
    tiny_checkpoint(tmp_path)
    _edit_tokenizer(tmp_path, edit)
    with pytest.raises(InvalidModelFile, match=re.escape(words)):
        read_vocab(tmp_path, {}, 272)


def test_a_huge_layer_count_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelFile, match="num_hidden_layers 1000000000000 exceeds 1024"):
        read_hparams(_config(num_hidden_layers=10**12), HERE)
    tiny_checkpoint(tmp_path)
    entries, _ = tensor_entries(tmp_path)
    hp = read_hparams(_config(num_hidden_layers=1000), HERE)
    with pytest.raises(InvalidModelFile, match="needs at least 9000 tensors"):
        plan_tensors(hp, entries, ImportType.F16, tmp_path)


def test_stale_partial_files_of_dead_processes_are_swept(tmp_path: Path) -> None:
    cache = ImportCache(tmp_path)
    dead, mine = (
        tmp_path / "a.gguf.7.999999999.partial",
        tmp_path / f"b.gguf.7.{os.getpid()}.partial",
    )
    dead.write_bytes(b"x")
    mine.write_bytes(b"x")
    cache.sweep()
    assert not dead.exists() and mine.exists()


# ---- SentencePiece-style tokenizers ---------------------------------------------------------


def test_sentencepiece_vocab_types_scores_and_space_prefix(tmp_path: Path) -> None:
    tiny_checkpoint(tmp_path, sentencepiece=True, shape=Shape(vocab=280))
    vocab = read_vocab(tmp_path, {}, 280)
    assert vocab.kind is VocabKind.SENTENCEPIECE_BPE and vocab.pre is None
    assert vocab.add_space_prefix is True and vocab.add_bos is True
    assert vocab.types[0] == TokenType.UNKNOWN and vocab.types[1:3] == [TokenType.CONTROL] * 2
    assert vocab.tokens[3 + 0x0A] == "<0x0A>" and vocab.types[3 + 0x0A] == TokenType.BYTE
    assert vocab.scores is not None
    ids = {t: i for i, t in enumerate(vocab.tokens)}
    # Merge ranks become scores, best (earliest) first; single characters score 0.
    assert vocab.scores[ids["ll"]] == 0.0 and vocab.scores[ids["▁h"]] == -1.0
    assert vocab.scores[ids["▁world"]] == -9.0 and vocab.scores[ids["h"]] == 0.0
    assert (vocab.bos, vocab.eos, vocab.unk) == (1, 2, 0)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"normalizer": None}, "does not turn spaces into '▁'"),
        (
            {"normalizer": None, "pre_tokenizer": {"type": "Metaspace", "prepend_scheme": "never"}},
            None,
        ),
        ({"model": {"type": "WordPiece", "vocab": {}}}, "tokenizer model 'WordPiece'"),
    ],
)
def test_sentencepiece_normalisation_is_read_or_refused(
    tmp_path: Path, changes: dict[str, Any], words: str | None
) -> None:
    tiny_checkpoint(tmp_path, sentencepiece=True, shape=Shape(vocab=280))
    _edit_tokenizer(tmp_path, lambda d: d.update(changes))
    if words is None:
        assert read_vocab(tmp_path, {}, 280).add_space_prefix is False
        return
    with pytest.raises(UnsupportedModel, match=re.escape(words)):
        read_vocab(tmp_path, {}, 280)


@pytest.mark.parametrize("bad", ["", "a\u0000b"])
def test_tokens_llama_cpp_would_abort_on_are_refused(tmp_path: Path, bad: str) -> None:
    tiny_checkpoint(tmp_path)
    _edit_tokenizer(
        tmp_path, lambda d: d["model"]["vocab"].update({bad: d["model"]["vocab"].pop("Ā")})
    )
    with pytest.raises(InvalidModelFile, match="is empty or holds a NUL character"):
        read_vocab(tmp_path, {}, 272)


def test_a_vocabulary_llama_cpp_could_not_survive_is_refused_before_converting(
    tmp_path: Path,
) -> None:
    # A byte_fallback tokenizer without <0xC3>: llama.cpp would terminate on "é" (vocab_check).
    tiny_checkpoint(tmp_path, sentencepiece=True, shape=Shape(vocab=280))
    check_imported_vocabulary(read_vocab(tmp_path, {}, 280), tmp_path)
    _edit_tokenizer(
        tmp_path,
        lambda d: d["model"]["vocab"].update({"<0xc3>": d["model"]["vocab"].pop("<0xC3>")}),
    )
    vocab = read_vocab(tmp_path, {}, 280)
    with pytest.raises(InvalidModelFile, match="no byte token <0xC3>"):
        check_imported_vocabulary(vocab, tmp_path)


def test_rope_settings_llama_cpp_would_not_honour_are_refused() -> None:
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}
    with pytest.raises(UnsupportedModel, match="beta_fast=16"):
        read_hparams(_config(rope_scaling={**yarn, "beta_fast": 16}), HERE)
    llama3 = {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192}
    with pytest.raises(UnsupportedModel, match="llama3 rope_scaling is only for Llama"):
        read_hparams(_config(architectures=["Qwen2ForCausalLM"], rope_scaling=llama3), HERE)


def test_an_unhashable_special_token_id_is_not_a_crash(tmp_path: Path) -> None:
    tiny_checkpoint(tmp_path)

    def edit(doc: dict[str, Any]) -> None:
        doc["post_processor"] = {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": ["x"], "type_id": 0}}],
            "special_tokens": {},
        }

    _edit_tokenizer(tmp_path, edit)
    tok_config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    del tok_config["add_bos_token"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(tok_config))
    assert read_vocab(tmp_path, {}, 272).add_bos is False
