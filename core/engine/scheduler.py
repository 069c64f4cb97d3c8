"""One dedicated thread for a model's side jobs (tokenizer, embeddings): bounded, in order."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import TypeVar

from core.errors import Overloaded

T = TypeVar("T")


class SerialScheduler:
    """Runs blocking jobs on one dedicated thread, in arrival order, refusing past the queue bound.

    Generation does not go through here: the step loop (core.engine.step_loop) batches it.
    """

    def __init__(self, name: str, queue_size: int) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"engine-{name}"
        )
        self._name = name
        self._limit = queue_size + 1  # the running job plus the waiting ones
        self._admitted = 0

    @property
    def admitted(self) -> int:
        """Jobs running or waiting."""
        return self._admitted

    def submit(self, job: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Queue a job or raise Overloaded at once; call from the event loop thread."""
        if self._admitted >= self._limit:
            raise Overloaded(
                f"model {self._name!r} is busy: {self._admitted - 1} requests already waiting; retry later"
            )
        loop = asyncio.get_running_loop()
        self._admitted += 1
        future = self._executor.submit(job)
        future.add_done_callback(lambda _f: loop.call_soon_threadsafe(self._release))
        return future

    def _release(self) -> None:
        self._admitted -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
