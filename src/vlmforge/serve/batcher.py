"""The request queue and its worker thread, and dynamic batching: requests that arrive together are generated together.

Requests wait in a queue (``Batcher``). ``DynamicBatcher``'s worker takes the oldest, waits for more with the same
sampling settings (a batch shares one ``SamplingParams``, except that rows may differ in ``max_new_tokens`` where the
engine allows it) until a short window passes without one arriving, and runs them as one batched ``generate`` or
``stream`` to the longest row's ``max_new_tokens``, each row cut at its own. A non-streamed request is answered when
its batch ends, so such a batch takes only rows whose ``max_new_tokens`` lie within ``max_length_ratio`` of each other
(``fits_lengths``). ``vlmforge.serve.continuous`` instead lets requests join a running batch at every step.
Results go back to each request's asyncio queue on its own event loop, so the loop never blocks on the model.
"""

from __future__ import annotations

import asyncio
import gc
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

from vlmforge.runtime import Completion, Conversation, SamplingParams
from vlmforge.serve.engine import TextEngine, count_tokens, prompt_token_counts
from vlmforge.serve.settings import MAX_LENGTH_RATIO, length_ratio
from vlmforge.serve.streaming import StreamText
from vlmforge.serve.timings import StageTimings

# A batch waits for company until a window passes with no compatible arrival, and at most this many windows in all,
# however steadily requests keep coming.
MAX_WINDOWS = 5


def freeze_heap() -> None:
    """Once per process: collect, then leave every object alive now (the model, its modules, the libraries) out of
    later garbage collections. A full collection walks all of them and pauses every request in flight for as long."""
    if gc.get_freeze_count() == 0:
        gc.collect()
        gc.freeze()


class QueueFull(Exception):
    """More requests are waiting than the server accepts."""


@dataclass
class Delta:
    text: str


@dataclass
class Done:
    completion: Completion


@dataclass
class Failed:
    error: Exception


def batch_key(params: SamplingParams, stream: bool, mixed_lengths: bool = False) -> tuple:
    """Requests with equal keys may share a batch; with ``mixed_lengths`` (the engine's, see
    ``VisionLanguageModel.mixed_lengths``) whatever their ``max_new_tokens``."""
    if params.temperature > 0 and params.seed is not None:
        # a seeded sample is reproducible only if it runs alone: batch mates would shift the random stream
        return ("seeded", object())
    length = None if mixed_lengths else params.max_new_tokens
    return (stream, length, params.temperature, params.top_p, tuple(params.stop))


def fits_lengths(shortest: int, longest: int, budget: int, ratio: float) -> bool:
    """Whether a row of ``budget`` new tokens may join rows of ``shortest`` to ``longest``: the batch's longest row
    stays within ``ratio`` (at least 1; ``inf``: any lengths) times its shortest."""
    return math.isinf(ratio) or max(longest, budget) <= ratio * min(shortest, budget)


@dataclass(eq=False)
class Job:
    conversation: Conversation
    params: SamplingParams
    stream: bool
    loop: asyncio.AbstractEventLoop
    key: tuple
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    submitted: float = field(default_factory=time.perf_counter)
    done_at: float = 0.0  # when the worker handed over the result (for the event loop's wake-up time)
    answered: bool = False  # something was sent to the client: it cannot be run again from the start

    def emit(self, event: Delta | Done | Failed) -> None:
        self.answered = True
        if not isinstance(event, Delta):
            self.done_at = time.perf_counter()
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the request's event loop is gone (client and server shut down)
            self.cancelled = True

    async def events(self) -> AsyncIterator[Delta | Done | Failed]:
        """Deltas (streaming requests only), then one Done or Failed."""
        try:
            while True:
                event = await self.queue.get()
                yield event
                if not isinstance(event, Delta):
                    return
        finally:
            self.cancelled = True  # the consumer left: skip this job if it has not started yet

    async def result(self) -> Completion:
        async for event in self.events():
            if isinstance(event, Done):
                return event.completion
            if isinstance(event, Failed):
                raise event.error
        raise RuntimeError("generation ended without a result")


class Batcher:
    """A queue of requests and the worker thread that serves it; subclasses decide how requests share the model."""

    thread_name = "vlmforge-batcher"

    def __init__(self, engine: TextEngine, max_batch_size: int = 8, window_ms: float = 10.0, max_queue: int = 64):
        self.engine = engine
        self.max_batch_size = max(1, max_batch_size)
        self.window_s = window_ms / 1000 if self.max_batch_size > 1 else 0.0  # no company to wait for at batch 1
        self.max_queue = max_queue
        self._pending: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.running = 0  # requests being generated now
        self._thread: threading.Thread | None = None
        self.timings: StageTimings | None = None
        self.mixed_lengths = bool(getattr(engine, "mixed_lengths", False))
        freeze_heap()  # the engine is loaded by now: what exists is what the server keeps

    def time_stages(self, timings: StageTimings) -> None:
        """Record queue waits, batch sizes and the engine's per-stage times (if it reports them) in ``timings``."""
        self.timings = timings
        observe = getattr(self.engine, "observe", None)
        if observe is not None:
            observe(lambda stage, seconds: timings.add(stage, seconds, self.running))

    @property
    def waiting(self) -> int:
        return len(self._pending)

    def submit(self, conversation: Conversation, params: SamplingParams, stream: bool = False) -> Job:
        """Queue a request (call from a running event loop). Raises QueueFull when the queue is full."""
        if params.temperature <= 0:
            params = replace(params, seed=None, top_p=1.0)  # greedy ignores both: let such requests batch together
        job = Job(
            conversation, params, stream, asyncio.get_running_loop(), batch_key(params, stream, self.mixed_lengths)
        )
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                # started lazily, so an app whose lifespan ran before (tests, reloads) serves again
                self._closed = False
                self._thread = threading.Thread(target=self._work, name=self.thread_name, daemon=True)
                self._thread.start()
            if len(self._pending) >= self.max_queue:
                raise QueueFull(f"{len(self._pending)} requests are already waiting")
            self._pending.append(job)
            self._cond.notify()
        return job

    def close(self) -> None:
        """Stop the worker after its current step or batch; requests still waiting fail."""
        with self._cond:
            self._closed = True
            waiting, self._pending = list(self._pending), deque()
            self._cond.notify_all()
        for job in waiting:
            job.emit(Failed(QueueFull("the server is shutting down")))
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _work(self) -> None:
        raise NotImplementedError

    def _open_queue(self) -> bool:
        """Drop the cancelled requests at the head of the queue; False once the batcher is closed. Hold ``_cond``."""
        while self._pending and self._pending[0].cancelled:
            self._pending.popleft()
        return not self._closed

    def _record_admitted(self, jobs: list[Job]) -> None:
        """Queue waits and the size of a group that starts now, when stages are timed."""
        if self.timings is not None and jobs:
            now = time.perf_counter()
            for job in jobs:
                self.timings.add("queue", now - job.submitted)
            self.timings.batch(len(jobs))


class DynamicBatcher(Batcher):
    """Runs requests with equal settings (``batch_key``) that arrive together as one ``generate`` or ``stream`` of the
    engine; a non-streamed batch's longest ``max_new_tokens`` is at most ``max_length_ratio`` times its shortest."""

    def __init__(
        self,
        engine: TextEngine,
        max_batch_size: int = 8,
        window_ms: float = 10.0,
        max_queue: int = 64,
        on_batch: Callable[[int], None] | None = None,
        max_length_ratio: float = MAX_LENGTH_RATIO,
    ):
        super().__init__(engine, max_batch_size, window_ms, max_queue)
        self.on_batch = on_batch  # observer of batch sizes (tests, metrics)
        self.max_length_ratio = length_ratio(max_length_ratio)

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            if batch:
                self._run(batch)

    def _next_batch(self) -> list[Job] | None:
        with self._cond:
            while True:
                if not self._open_queue():
                    return None
                if self._pending:
                    break
                self._cond.wait()
            head = self._pending[0]
            start = time.monotonic()
            deadline, seen = start + self.window_s, 0
            while (remaining := deadline - time.monotonic()) > 0:
                if (count := len(self._members(head))) >= self.max_batch_size:
                    break
                if count > seen:  # company is still arriving: wait a window past the latest arrival
                    deadline = min(time.monotonic() + self.window_s, start + MAX_WINDOWS * self.window_s)
                    seen = count
                    continue
                self._cond.wait(remaining)
            batch = self._members(head)
            for job in batch:
                self._pending.remove(job)
            self.running = len(batch)
        self._record_admitted(batch)
        return batch

    def _members(self, head: Job) -> list[Job]:
        """The batch ``head`` would start now: waiting requests with its key, oldest first, each taken while the
        batch's lengths still fit (``fits_lengths``), up to ``max_batch_size``. Those left out keep their place in the
        queue, so the oldest of them heads the next batch. Hold ``_cond``."""
        # a streamed row is answered at its own length, so long batch mates cost it no wait
        ratio = float("inf") if head.stream else self.max_length_ratio
        members: list[Job] = []
        shortest = longest = head.params.max_new_tokens
        for job in self._pending:
            if len(members) == self.max_batch_size:
                break
            budget = job.params.max_new_tokens
            if job.key == head.key and not job.cancelled and fits_lengths(shortest, longest, budget, ratio):
                members.append(job)
                shortest, longest = min(shortest, budget), max(longest, budget)
        return members

    def _run(self, batch: list[Job]) -> None:
        if self.on_batch:
            self.on_batch(len(batch))
        try:
            self._generate(batch)
        except Exception as err:  # a failed batch fails its requests, never the worker
            if len(batch) > 1 and not any(job.answered for job in batch):
                # before any output: each request alone, so one the model cannot take (an image its tokenizer
                # cannot read) fails only itself, as with continuous batching
                self._run_alone(batch)
            else:
                for job in batch:
                    job.emit(Failed(err))
        finally:
            self.running = 0

    def _generate(self, batch: list[Job]) -> None:
        # the batch runs to its longest row; the rest are cut at their own max_new_tokens, as if they ran alone
        lengths = [job.params.max_new_tokens for job in batch]
        params = replace(batch[0].params, max_new_tokens=max(lengths))
        if batch[0].stream:
            self._stream(batch, params, lengths)
        else:
            mixed = {"lengths": lengths} if len(set(lengths)) > 1 else {}
            completions = self.engine.generate([job.conversation for job in batch], params, **mixed)
            for job, completion in zip(batch, completions, strict=True):
                job.emit(Done(completion))

    def _run_alone(self, batch: list[Job]) -> None:
        for job in batch:
            if job.cancelled:
                continue
            try:
                self._generate([job])
            except Exception as err:
                job.emit(Failed(err))

    def _stream(self, batch: list[Job], params: SamplingParams, lengths: list[int]) -> None:
        """Stream the batch, one step per token; a row ends where it would alone: at the end of the batch, or as
        soon as it has its own ``max_new_tokens`` steps."""
        conversations = [job.conversation for job in batch]
        texts = [StreamText(params.stop) for _ in batch]
        last_output_step = [0] * len(batch)
        prompt_tokens: list[int] = []
        steps = 0

        def finish(row: int) -> None:
            job, text = batch[row], texts[row]
            if not prompt_tokens:
                prompt_tokens.extend(prompt_token_counts(self.engine, conversations))
            if released := text.finish():
                job.emit(Delta(released))
            ran = min(steps, lengths[row])
            # a row still producing text at its last allowed step was cut by the length limit
            cut = not text.stopped and ran >= lengths[row] and last_output_step[row] == ran
            tokens = count_tokens(self.engine, text.text)
            job.emit(Done(Completion(text.text, prompt_tokens[row], tokens, "length" if cut else "stop")))

        for deltas in self.engine.stream(conversations, params):
            steps += 1
            for row, (job, text, delta) in enumerate(zip(batch, texts, deltas, strict=True)):
                if steps > lengths[row]:
                    continue  # past its own max_new_tokens: already answered
                if delta:
                    last_output_step[row] = steps
                if (released := text.feed(delta)) and not job.cancelled:
                    job.emit(Delta(released))
                if steps == lengths[row] < params.max_new_tokens:
                    finish(row)  # cut here, as if alone, without waiting for the batch's longer rows
            if all(job.cancelled for job in batch):
                break  # every client left; the model finishes this batch in the background
        for row in range(len(batch)):
            if steps < lengths[row] or lengths[row] == params.max_new_tokens:
                finish(row)
