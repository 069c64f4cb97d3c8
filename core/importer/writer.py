"""One GGUF file from a checked import plan: header keys, then tensor data streamed in chunks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np

from core.importer.hparams import HParams, RopeKind
from core.importer.tensors import SourceMaps, TensorJob, encoded_chunks
from core.importer.vocab import Vocab, VocabKind
from core.settings import ImportType

# Bumped whenever the output for the same input changes; part of the cache key.
IMPORTER_VERSION = 2
_FILE_TYPES = {
    ImportType.F16: gguf.LlamaFileType.MOSTLY_F16,
    ImportType.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
}


def header_bytes(vocab: Vocab, jobs: list[TensorJob]) -> int:
    """An upper bound on the header's size: the vocabulary dominates it."""
    strings = sum(len(t.encode()) + 8 for t in (*vocab.tokens, *vocab.merges))
    template = len((vocab.chat_template or "").encode())
    return strings + 8 * len(vocab.tokens) + template + 128 * len(jobs) + (64 << 10)


def output_bytes(vocab: Vocab, jobs: list[TensorJob]) -> int:
    alignment = gguf.GGUF_DEFAULT_ALIGNMENT
    return header_bytes(vocab, jobs) + sum(j.nbytes + alignment for j in jobs)


def _add_hparams(w: gguf.GGUFWriter, hp: HParams, wanted: ImportType, name: str) -> None:
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(name)
    w.add_context_length(hp.context_length)
    w.add_embedding_length(hp.hidden)
    w.add_block_count(hp.layers)
    w.add_feed_forward_length(hp.intermediate)
    w.add_head_count(hp.heads)
    w.add_head_count_kv(hp.kv_heads)
    w.add_layer_norm_rms_eps(hp.rms_eps)
    w.add_rope_freq_base(hp.rope_theta)
    w.add_rope_dimension_count(hp.head_dim)
    if hp.head_dim * hp.heads != hp.hidden:
        w.add_key_length(hp.head_dim)
        w.add_value_length(hp.head_dim)
    w.add_vocab_size(hp.vocab_size)
    w.add_file_type(_FILE_TYPES[wanted])
    if wanted is ImportType.Q8_0:
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    rope = hp.rope
    if rope.kind is RopeKind.LINEAR:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope.factor)
    elif rope.kind is RopeKind.YARN:
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(rope.factor)
        w.add_rope_scaling_orig_ctx_len(rope.original_context)


def _add_vocab(w: gguf.GGUFWriter, vocab: Vocab) -> None:
    w.add_tokenizer_model(vocab.kind.value)
    if vocab.pre is not None:
        w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.types)
    if vocab.scores is not None:
        w.add_token_scores(vocab.scores)
    if vocab.add_space_prefix is not None:
        w.add_add_space_prefix(vocab.add_space_prefix)
    if vocab.kind is VocabKind.BYTE_LEVEL_BPE:  # llama.cpp's "llama" vocabulary merges by score
        w.add_token_merges(vocab.merges)
    for token_id, add in (
        (vocab.bos, w.add_bos_token_id),
        (vocab.eos, w.add_eos_token_id),
        (vocab.pad, w.add_pad_token_id),
        (vocab.unk, w.add_unk_token_id),
    ):
        if token_id is not None:
            add(token_id)
    w.add_add_bos_token(vocab.add_bos)
    w.add_add_eos_token(vocab.add_eos)
    if vocab.chat_template:
        w.add_chat_template(vocab.chat_template)


def write_gguf(
    dest: Path,
    hp: HParams,
    vocab: Vocab,
    jobs: list[TensorJob],
    wanted: ImportType,
    *,
    name: str,
    source: str,
    progress: Callable[[float], None],
) -> None:
    """Write the file; each tensor is read, converted and written before the next is touched."""
    w = gguf.GGUFWriter(dest, gguf.MODEL_ARCH_NAMES[hp.family.arch])
    maps = SourceMaps()
    try:
        _add_hparams(w, hp, wanted, name)
        _add_vocab(w, vocab)
        w.add_string("minerva.import.source", source)
        w.add_uint32("minerva.import.version", IMPORTER_VERSION)
        for job in jobs:
            w.add_tensor_info(job.name, job.shape, np.dtype(np.float32), job.nbytes, job.qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        assert w.fout is not None
        out = w.fout[0]
        total, done = sum(j.nbytes for j in jobs) or 1, 0
        for job in jobs:
            w.write_padding(out, out.tell())
            written = 0
            for chunk in encoded_chunks(job, maps):
                chunk.tofile(out)
                written += chunk.nbytes
            if written != job.nbytes:  # a bug, not bad input: never leave a corrupt file
                raise RuntimeError(f"{job.name}: wrote {written} bytes, expected {job.nbytes}")
            w.write_padding(out, job.nbytes)
            done += job.nbytes
            progress(done / total)
    finally:
        maps.close()
        w.close()
