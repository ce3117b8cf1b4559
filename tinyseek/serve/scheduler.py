"""The scheduler: one background thread drives the engine; request handlers wait on asyncio queues.

The engine does continuous batching (`add_request` / `step` / `abort`) but is not thread-safe, so
every engine call happens on this one thread. Handlers (on uvicorn's event loop) `submit` jobs and
`cancel` them; the thread admits waiting jobs while the engine has free slots, runs `step()` (one
decode step shared by every running request, plus the prefill of newly admitted ones), and posts each
new token to its job's asyncio queue with `event_loop.call_soon_threadsafe`.

- Bounded queue: at most `max_queue` jobs wait for a slot; `submit` raises `QueueFull` beyond that
  (the API answers 503).
- Each engine event goes to its job's queue as ("step", (text, finish_reason)): the new text (stop tokens
  left out, stop strings cut: the engine applies the stop rules and ends a row in the step that meets one)
  and, on the last one, why it ended. The job keeps every token id it was given (`token_ids`), which is
  what the request is billed for.
- Cancellation (a client that disconnects, or an error) is applied at the top of the next loop iteration,
  before the next step, so the slot is free for the next waiting job at once; `cancel(jobs, on_done)`
  runs `on_done` once none of the jobs can produce another token, so usage is counted after the last one.
- Context caching: before admission a job's prompt is looked up in the `BlockCache`; the cached rows
  go to the engine as `prefix=` (a `PromptRows`) and only the rest of the prompt is prefilled. Jobs
  are added with `capture_prompt_cache=True`: the engine hands back the prompt's rows on the request's
  first event, and they are inserted block by block.
- Slots: jobs go to the engine only while it has a free row (`max_running` = its `max_batch`), so the
  engine's own queue stays empty and the bounded queue here is the only one.
- `call(fn)` runs `fn()` on this thread once no job is running, admitting nothing new meanwhile: how the
  model's weights are swapped under a live server (`POST /update_weights_from_disk`), never mid-sequence.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
import time
import traceback
from dataclasses import dataclass, field

from tinyseek.errors import TinyseekError
from tinyseek.inference.sequence import PromptRows
from tinyseek.serve.prefix_cache import BlockCache


class QueueFull(Exception):
    pass


@dataclass
class Job:
    """One sample of one request: a prompt and sampling parameters, and where its tokens go."""

    prompt_ids: list[int]
    params: object  # engine.SamplingParams
    queue: asyncio.Queue  # receives (index, kind, payload): ("step", (text, finish_reason | None)) | ("error", msg)
    event_loop: asyncio.AbstractEventLoop
    index: int = 0  # choice index within its request
    use_cache: bool = True
    cached_tokens: int = 0  # prompt tokens served by the prefix cache (set at admission)
    rid: object = None
    token_ids: list[int] = field(default_factory=list)  # every token the engine generated for this job
    logprobs: list[float] = field(default_factory=list)  # their log-probs, when params.logprobs
    cancelled: bool = False
    done: bool = False
    submitted: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None

    def post(self, kind: str, payload) -> None:
        try:
            self.event_loop.call_soon_threadsafe(self.queue.put_nowait, (self.index, kind, payload))
        except RuntimeError:  # the event loop is closed (server shutting down)
            pass


class Scheduler:
    def __init__(
        self, engine, prefix_cache: BlockCache | None = None, max_queue: int = 64, max_running: int | None = None
    ):
        self.engine = engine
        self.prefix_cache = prefix_cache
        self.max_queue = max_queue
        self.max_running = max_running or getattr(engine, "max_batch", 64)
        self._waiting: collections.deque[Job] = collections.deque()
        self._running: dict[object, Job] = {}
        self._cancel: list[tuple[list[Job], object]] = []  # (jobs, on_done) to apply before the next step
        self._calls: list[tuple[object, concurrent.futures.Future]] = []  # fn() to run once nothing is running
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.steps = 0
        self.step_batch_sizes: collections.Counter = collections.Counter()  # running jobs per step -> count

    # -- called from the event loop ------------------------------------------------------------
    def submit(self, jobs: list[Job]) -> None:
        with self._lock:
            if len(self._waiting) + len(jobs) > self.max_queue:
                raise QueueFull(f"the queue is full ({len(self._waiting)} waiting, limit {self.max_queue})")
            self._waiting.extend(jobs)
        self._wake.set()

    def cancel(self, jobs: list[Job], on_done=None) -> None:
        """Stop `jobs` (waiting or running) before the engine's next step. `on_done()`, if given, runs once none of
        them can produce another token: at once when they are all finished, else on the scheduler thread."""
        with self._lock:
            for j in jobs:
                if not j.done:
                    j.cancelled = True
            pending = any(not j.done for j in jobs)
            if pending:
                self._cancel.append((list(jobs), on_done))
        if not pending and on_done is not None:
            on_done()
        self._wake.set()

    def call(self, fn) -> concurrent.futures.Future:
        """Run `fn()` on the engine thread as soon as no job is running (running jobs finish first, waiting ones
        wait); the future holds its result or exception."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self._calls.append((fn, fut))
        self._wake.set()
        return fut

    def load(self) -> dict:
        with self._lock:
            return {
                "waiting": len(self._waiting),
                "running": len(self._running),
                "max_queue": self.max_queue,
                "max_running": self.max_running,
                "steps": self.steps,
            }

    # -- the engine thread ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tinyseek-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._apply_cancellations()  # shutting down: settle what was asked (e.g. bill abandoned requests)
            with self._lock:
                calls, self._calls = self._calls, []
            for _, fut in calls:
                fut.set_exception(RuntimeError("the server is shutting down"))

    def _loop(self) -> None:
        while not self._stop:
            try:
                self._apply_cancellations()
                if self._calls:
                    if not self._running:
                        self._run_calls()
                        continue
                    self._step()  # drain: finish the running jobs before the call, admit nothing new
                    continue
                self._admit()
                if not self._running:
                    self._wake.wait(timeout=0.5)
                    self._wake.clear()
                    continue
                self._step()
            except Exception as e:  # an engine bug: fail the running jobs, keep serving
                msg = f"engine error: {type(e).__name__}: {e}"
                traceback.print_exc()
                for rid, job in list(self._running.items()):
                    job.done = True
                    job.post("error", msg)
                    try:
                        self.engine.abort(rid)
                    except Exception:
                        pass
                self._running.clear()

    def _run_calls(self) -> None:
        with self._lock:
            calls, self._calls = self._calls, []
        for fn, fut in calls:
            try:
                fut.set_result(fn())
            except Exception as e:  # the caller hears about it (e.g. a bad weights file); the server keeps serving
                fut.set_exception(e)

    def _apply_cancellations(self) -> None:
        with self._lock:
            cancel, self._cancel = self._cancel, []
            if cancel:
                self._waiting = collections.deque(j for j in self._waiting if not j.cancelled)
        for jobs, on_done in cancel:
            for job in jobs:
                if job.rid is not None and job.rid in self._running:
                    self.engine.abort(job.rid)
                    del self._running[job.rid]
                job.done = True
            if on_done is not None:
                on_done()

    def _admit(self) -> None:
        while len(self._running) < self.max_running:
            with self._lock:
                if not self._waiting:
                    return
                job = self._waiting.popleft()
            prefix = None
            if self.prefix_cache is not None and job.use_cache:
                hit = self.prefix_cache.lookup(job.prompt_ids)
                if hit.n_tokens:
                    prefix = PromptRows(tuple(job.prompt_ids[: hit.n_tokens]), hit.tensors)
                    job.cached_tokens = hit.n_tokens
            try:
                job.rid = self.engine.add_request(
                    job.prompt_ids, job.params, prefix=prefix, capture_prompt_cache=self._worth_caching(job)
                )
            except TinyseekError as e:  # the engine refused this prompt: fail this job alone
                job.done = True
                job.post("error", f"engine refused the request: {e}")
                continue
            self._running[job.rid] = job

    def _worth_caching(self, job: Job) -> bool:
        """Capture a prompt's rows only if it has a full block beyond what was already a hit."""
        if self.prefix_cache is None or not job.use_cache:
            return False
        return len(job.prompt_ids) - 1 >= job.cached_tokens + self.prefix_cache.block_size

    def _step(self) -> None:
        self.step_batch_sizes[len(self._running)] += 1
        events = self.engine.step()
        self.steps += 1
        for ev in events:
            job = self._running.get(ev.rid)
            if job is None:
                continue
            if ev.prompt_cache is not None and self.prefix_cache is not None:
                pc = ev.prompt_cache
                self.prefix_cache.insert(list(pc.token_ids), pc.tensors)
            if ev.token_ids and not job.token_ids:
                job.first_token_at = time.monotonic()
            job.token_ids.extend(ev.token_ids)
            if ev.logprobs:
                job.logprobs.extend(ev.logprobs)
            if ev.finish_reason is not None:
                job.done = True
                del self._running[ev.rid]
                self.engine.collect(ev.rid)  # the engine keeps a finished request until collected
            if ev.token_ids or ev.text or ev.finish_reason is not None:
                job.post("step", (ev.text, ev.finish_reason))
