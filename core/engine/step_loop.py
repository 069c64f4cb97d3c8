"""The step loop: one thread per model advancing every admitted request by one batched decode.

Each step puts one token per generating choice into the batch, fills the rest (up to n_batch)
with prompt chunks of requests still in prefill, decodes once, then samples each choice with its
own chain at its own batch index. Reference design: llama.cpp tools/server (update_slots).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field

from core.engine import openmp
from core.engine.admission import SlotTable
from core.engine.batch_context import DECODE_NO_KV_SLOT, BatchContext
from core.engine.choice_picker import ChoicePicker
from core.engine.llama_backend import LlamaModel, LoadOptions
from core.engine.prompt_cache import PromptCache
from core.engine.sequence import Choice, Job, JobState
from core.engine.types import EngineStats, FinishReason
from core.errors import InvalidRequest, Overloaded

log = logging.getLogger(__name__)

# Smallest prompt chunk tried when the KV cache is short of room, before failing a request.
MIN_CHUNK = 16
# Steps a prefilling request may go without prompt tokens before it is served first.
STARVED_STEPS = 8


@dataclass
class _Plan:
    """What one step put in the batch."""

    decoding: list[Choice] = field(default_factory=list)
    prefill: list[tuple[Job, int]] = field(default_factory=list)  # (job, chunk length)
    logits_at: dict[int, int] = field(default_factory=dict)  # id(job) -> batch index

    @property
    def prefill_tokens(self) -> int:
        return sum(n for _, n in self.prefill)


class StepLoop:
    """Owns a BatchContext on its own thread; submit() and cancel flags are its only inputs."""

    def __init__(self, name: str, model: LlamaModel, opts: LoadOptions, queue_size: int) -> None:
        self._name = name
        self._vocab = model.vocab
        self._ctx = BatchContext(model, opts.kv_cells, opts.batch_size, opts.slots)
        self._table = SlotTable(self._ctx, opts.slots, PromptCache(opts.prompt_cache_bytes))
        self._picker = ChoicePicker(name, self._ctx, self._vocab)
        self._limit = opts.slots + queue_size  # running plus waiting requests
        self._cv = threading.Condition()
        self._waiting: collections.deque[Job] = collections.deque()
        self._running: list[Job] = []
        self._admitted = 0  # guarded by _cv: submitted and not yet finished
        self._closed = False
        self._kv_pressure = False  # a request went back to the queue for want of KV room
        self._seq_cap = opts.context_size
        # CPU threads asked for (set from the event loop) and those the context computes with
        # (the step thread's own): llama.cpp changes them only between decodes, on this thread.
        self._threads_wanted = opts.threads
        self._threads_applied = opts.threads
        self._prefill_tokens = 0
        self._decode_tokens = 0
        self._thread = threading.Thread(target=self._run, name=f"engine-{name}", daemon=True)
        self._thread.start()

    # --- event loop side ---------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._admitted > 0

    @property
    def slots(self) -> int:
        return len(self._table.slots)

    @property
    def capacity(self) -> int:
        """Requests it takes at once: running plus waiting."""
        return self._limit

    @property
    def kv_cells(self) -> int:
        return self._ctx.kv_cells

    def submit(self, job: Job) -> None:
        """Queue a request or raise at once (Overloaded, or InvalidRequest for what can never run)."""
        request = job.request
        if not request.prompt or not 1 <= request.n <= self.slots:
            raise InvalidRequest(f"{request.n} choices on {self.slots} slots", param="sampling.n")
        if len(request.prompt) + request.max_tokens > self._seq_cap:
            raise InvalidRequest(
                f"prompt + max_tokens exceed the sequence capacity of {self._seq_cap}",
                param="sampling.max_tokens",
            )
        if len(request.prompt) + request.n * request.max_tokens > self.kv_cells:
            raise InvalidRequest(
                f"prompt + {request.n} x max_tokens exceed the KV cache ({self.kv_cells})",
                param="sampling.max_tokens",
            )
        with self._cv:
            if self._closed:
                raise Overloaded(f"model {self._name!r} is unloading; retry")
            if self._admitted >= self._limit:
                raise Overloaded(
                    f"model {self._name!r} is busy: {len(self._waiting)} requests already "
                    "waiting; retry later"
                )
            self._admitted += 1
            self._waiting.append(job)
            self._cv.notify()

    def set_threads(self, n: int) -> None:
        """Compute with `n` CPU threads from the next decode on."""
        self._threads_wanted = n  # one int store: the step thread reads it before each decode

    @property
    def threads_applied(self) -> int:
        """The CPU threads the last decode computed with (or the next, before any decode)."""
        return self._threads_applied

    def wake(self) -> None:
        """Make the thread look at cancel flags now (it may be waiting for work)."""
        with self._cv:
            self._cv.notify()

    def stats(self) -> EngineStats:
        return EngineStats(
            queue_depth=len(self._waiting),
            active_sequences=sum(len(j.live) for j in list(self._running)),
            slots=self.slots,
            prefill_tokens=self._prefill_tokens,
            decode_tokens=self._decode_tokens,
            prefix_cache_hit_tokens=self._table.hit_tokens,
        )

    def close(self) -> None:
        """Finish what was submitted (callers abort first to hurry it), then free the context."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join()
        self._ctx.close()

    # --- step thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while self._next_work():
            try:
                self._admit()
                self._step()
            except Exception as exc:  # a bug or a llama.cpp failure: fail these, keep serving
                log.exception("model %s: step failed", self._name)
                for job in list(self._running):
                    self._end(job, error=exc)
                self._table.reset()
                self._kv_pressure = False

    def _next_work(self) -> bool:
        """Wait until there is something to do, meanwhile moving idle caches to host RAM one at
        a time (a request that arrives waits for one at most), then letting this thread's
        OpenMP workers go (core.engine.openmp); False once closed and drained."""
        rested = False
        while True:
            with self._cv:
                if self._waiting or self._running or self._closed:
                    return bool(self._waiting or self._running)
                parkable = self._table.has_parkable()
                if not parkable and rested:
                    self._cv.wait()
                    continue
            if parkable:
                self._table.park_one()
            else:
                openmp.release_threads()
                rested = True

    def _admit(self) -> None:
        """Admit waiting requests in arrival order while slots are free."""
        with self._cv:
            gone = [j for j in self._waiting if j.cancelled.is_set()]
            for job in gone:
                self._waiting.remove(job)
        for job in gone:
            self._finish_unstarted(job)
        if any(j.requeued for j in gone):
            self._kv_pressure = False  # the request it was holding back for is gone
        if self._kv_pressure and self._running:
            return  # the KV cache was full: wait until a running request ends
        self._kv_pressure = False
        while True:
            with self._cv:
                if not self._waiting or self._table.idle < self._waiting[0].request.n:
                    return  # first come, first served: later requests wait behind the head
                job = self._waiting.popleft()
            try:
                placed = self._table.place(job)  # KV edits happen outside the lock
            except Exception as exc:
                log.exception("model %s: admission failed", self._name)
                self._forget(job)
                job.send_error(exc)
                continue
            if not placed:
                with self._cv:
                    self._waiting.appendleft(job)
                return
            self._start(job)

    def _start(self, job: Job) -> None:
        job.clock.started = time.perf_counter()
        job.state = JobState.PREFILL
        self._running.append(job)

    def _finish_unstarted(self, job: Job) -> None:
        job.state = JobState.DONE
        self._forget(job)
        job.send(job.result())

    def _step(self) -> None:
        for job in [j for j in self._running if j.cancelled.is_set()]:
            self._end(job)
        if not self._running:
            return
        self._table.park_one()  # one idle cache per step: its cells slow every query
        plan = self._decode()
        self._commit(plan)
        self._sample(plan)
        for job in [j for j in self._running if j.state is JobState.DECODING and not j.live]:
            self._end(job)

    def _decode(self) -> _Plan:
        """Build and decode a batch, making room in the KV cache when it is full."""
        budget = self._ctx.n_batch
        while True:
            plan = self._fill(budget)
            if not plan.decoding and not plan.prefill:
                return plan
            self._apply_threads()
            rc = self._ctx.decode()
            if rc == 0:
                return plan
            if rc != DECODE_NO_KV_SLOT:
                raise RuntimeError(f"llama_decode failed with code {rc}")
            if self._table.free_idle():
                continue
            if plan.prefill_tokens > MIN_CHUNK:
                budget = len(plan.decoding) + plan.prefill_tokens // 2
                continue
            self._relieve_kv()

    def _apply_threads(self) -> None:
        wanted = self._threads_wanted
        if wanted != self._threads_applied:
            self._ctx.set_threads(wanted)
            self._threads_applied = wanted

    def _fill(self, budget: int) -> _Plan:
        ctx, plan = self._ctx, _Plan()
        ctx.clear_batch()
        for job in self._running:
            if job.state is JobState.DECODING:
                for choice in job.live:
                    if choice.pending is not None:
                        slot = choice.slot
                        ctx.add(choice.pending, len(slot.tokens), slot.seq_id, True)
                        plan.decoding.append(choice)
        room = budget - len(plan.decoding)
        # Shortest remaining prompt first, so a short request never waits behind a long prompt;
        # one that went without for STARVED_STEPS goes first, so a long one always finishes.
        prefilling = [j for j in self._running if j.state is JobState.PREFILL]
        for job in sorted(prefilling, key=prefill_order):
            if room <= 0:
                job.starved_steps += 1
            else:
                job.starved_steps = 0
                chunk = job.prompt[job.n_past : job.n_past + room]
                last = job.n_past + len(chunk) == len(job.prompt)
                seq = job.slots[0].seq_id
                for i, token in enumerate(chunk):
                    index = ctx.add(token, job.n_past + i, seq, last and i == len(chunk) - 1)
                if last:
                    plan.logits_at[id(job)] = index
                plan.prefill.append((job, len(chunk)))
                room -= len(chunk)
        return plan

    def _commit(self, plan: _Plan) -> None:
        """The batch is in the KV cache: record what each slot now holds."""
        for choice in plan.decoding:
            choice.slot.tokens.append(choice.pending)  # type: ignore[arg-type]
            choice.pending = None
        self._decode_tokens += len(plan.decoding)
        for job, n in plan.prefill:
            job.slots[0].tokens.extend(job.prompt[job.n_past : job.n_past + n])
            job.n_past += n
            self._prefill_tokens += n
            if job.n_past == len(job.prompt):
                job.clock.prompt_done = time.perf_counter()
                self._table.fork(job)
                try:
                    job.choices = self._picker.choices(job)
                except Exception as exc:  # this request's samplers, not everyone's
                    log.exception("model %s: sampler setup failed", self._name)
                    self._end(job, error=exc)
                    continue
                job.state = JobState.DECODING

    def _sample(self, plan: _Plan) -> None:
        batch_index = self._batch_indices(plan)
        for job in list(self._running):
            for choice in job.live:
                i = batch_index.get(id(choice))
                if i is None:
                    continue
                try:
                    token = self._picker.pick(choice, i)
                except InvalidRequest as exc:  # its grammar is too slow to follow
                    self._end(job, error=exc)
                    break
                if token is None:  # the grammar is complete and nothing else may follow
                    choice.finish(FinishReason.STOP)
                    continue
                if not job.clock.first_token:
                    job.clock.first_token = time.perf_counter()
                # Sampling reads the logits without changing them: they are still the model's.
                scored = (
                    choice.score(self._ctx.logits(i), token, self._vocab)
                    if choice.wants_logprobs
                    else None
                )
                choice.accept(token, self._vocab, scored)
                if choice.lazy is not None:  # still generating, its grammar not yet triggered
                    self._picker.watch(choice, choice.lazy, token)

    def _batch_indices(self, plan: _Plan) -> dict[int, int]:
        """Where each choice samples this step: its decoded token, or its prompt's last token."""
        found = {id(c): i for i, c in enumerate(plan.decoding)}
        for job, _ in plan.prefill:
            at = plan.logits_at.get(id(job))
            if at is not None:
                found.update({id(c): at for c in job.choices})
        return found

    def _relieve_kv(self) -> None:
        """The KV cache is full even without idle caches and with the smallest prompt chunk.

        A request still reading its prompt has sent nothing yet: it goes back to the head of the
        queue (what it evaluated stays cached for its return) and admission pauses until a
        running request ends. Only when every request is generating does the newest one fail.
        """
        prefilling = [j for j in self._running if j.state is JobState.PREFILL]
        if prefilling and len(self._running) > 1:
            self._requeue(prefilling[-1])
            return
        job = self._running[-1]
        needed = len(job.prompt) + job.request.max_tokens
        self._end(
            job,
            error=Overloaded(
                f"the KV cache of model {self._name!r} ({self._ctx.kv_cells} tokens) is full "
                f"with other requests; this one needs up to {needed}; retry later"
            ),
        )

    def _requeue(self, job: Job) -> None:
        self._running.remove(job)
        self._table.release(job)
        job.state, job.slots, job.requeued = JobState.WAITING, [], True
        self._kv_pressure = True
        with self._cv:
            self._waiting.appendleft(job)

    def _end(self, job: Job, error: BaseException | None = None) -> None:
        """Finish a running job: its result (or error) goes out, its slots are free again."""
        for choice in job.choices:
            choice.finish(FinishReason.CANCELLED)
        job.state = JobState.DONE
        self._running.remove(job)
        self._table.release(job)
        self._kv_pressure = False
        self._forget(job)  # before the result goes out: a caller seeing it sees us idle
        if error is not None:
            job.send_error(error)
        else:
            job.send(job.result())

    def _forget(self, job: Job) -> None:
        with self._cv:
            self._admitted -= 1


def prefill_order(job: Job) -> tuple[bool, int]:
    """Sort key for prefilling requests: starved ones first, then the least prompt left."""
    return job.starved_steps < STARVED_STEPS, len(job.prompt) - job.n_past
