"""SafeTensors checkpoint -> cached GGUF file, validated first, converted at most once per source."""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from core.errors import InsufficientStorage, InvalidModelFile, ShuttingDown
from core.importer.cache import ImportCache, identity_key, source_files
from core.importer.hparams import read_hparams
from core.importer.tensors import plan_tensors
from core.importer.vocab import check_imported_vocabulary, read_vocab
from core.importer.writer import IMPORTER_VERSION, output_bytes, write_gguf
from core.metadata.safetensors_reader import CONFIG_NAME, read_config, tensor_entries
from core.settings import ImportType

log = logging.getLogger(__name__)

Progress = Callable[[float], None]


class Importer:
    """Converts Hugging Face checkpoints into its cache; blocking, run off the event loop."""

    def __init__(self, cache: ImportCache) -> None:
        self.cache = cache
        self._stop = threading.Event()

    def cancel(self) -> None:
        """Abandon conversions in progress (shutdown); their partial files are removed."""
        self._stop.set()

    def ensure_gguf(
        self, model_id: str, path: Path, wanted: ImportType, progress: Progress
    ) -> Path:
        """The GGUF for this checkpoint, converting it first unless an up-to-date one is cached."""
        entries, directory = tensor_entries(path)
        config = read_config(directory)
        if not config:
            raise InvalidModelFile(f"{directory}: {CONFIG_NAME} is missing beside the weights")
        hp = read_hparams(config, directory / CONFIG_NAME)
        files = source_files(directory, {e.file for e in entries.values()})
        key = identity_key(files, wanted, IMPORTER_VERSION)
        final = self.cache.path_for(path, wanted, key)
        if final.is_file():
            return final
        self.cache.sweep()
        with self.cache.exclusive(key):
            if final.is_file():  # converted by the caller we waited for
                return final
            if self._stop.is_set():
                raise ShuttingDown("conversion abandoned at shutdown")
            # Tensors first: their shapes bound vocab_size before the vocabulary is padded to it.
            jobs = plan_tensors(hp, entries, wanted, path)
            vocab = read_vocab(directory, config, hp.vocab_size)
            check_imported_vocabulary(vocab, directory)  # before minutes of conversion
            self.cache.check_space(output_bytes(vocab, jobs), model_id)
            started = time.perf_counter()

            def step(fraction: float) -> None:
                if self._stop.is_set():
                    raise ShuttingDown("conversion abandoned at shutdown")
                progress(fraction)

            try:
                with self.cache.writing(final) as temp:
                    write_gguf(
                        temp,
                        hp,
                        vocab,
                        jobs,
                        wanted,
                        name=hp.name or model_id,
                        source=str(path),
                        progress=step,
                    )
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # another writer took the space
                    raise InsufficientStorage(
                        f"the disk filled while converting to GGUF in {self.cache.directory}"
                    ) from exc
                raise
            self.cache.remove_older(path, wanted, final)
            log.info(
                "converted %s to %s GGUF in %.1f s: %s",
                model_id,
                wanted.value,
                time.perf_counter() - started,
                final,
            )
        return final
