"""Continuous batching: requests join the running decode batch at the next step and leave the moment they finish.

One worker thread loops: take the waiting requests that fit (up to ``max_batch_size`` rows in all) and prefill them
together into the running batch (``vlmforge.serve.running_batch``), then run one decode step for every row, then
hand back each row that ended (end of turn, a stop string, its ``max_tokens``) at once. Rows keep their own sampling
settings; a sampled request with a seed runs alone, so the same seed gives the same answer. Streaming rows' text
goes through ``StreamText``, as with dynamic batching.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from vlmforge.errors import ConfigError
from vlmforge.runtime import Completion, SamplingParams, apply_stop
from vlmforge.serve.batcher import MAX_WINDOWS, Batcher, Delta, Done, DynamicBatcher, Failed, Job, QueueFull
from vlmforge.serve.engine import TextEngine
from vlmforge.serve.running_batch import RowSampling, RunningBatch, Sampler, stepwise_support
from vlmforge.serve.settings import ServeSettings
from vlmforge.serve.streaming import StreamText


def runs_alone(params: SamplingParams) -> bool:
    """A seeded sample is reproducible only alone: batch mates would draw from the same random stream."""
    return params.temperature > 0 and params.seed is not None


@dataclass(eq=False)
class Row:
    """One request in the running batch."""

    job: Job
    prompt_tokens: int
    tokens: list[int] = field(default_factory=list)  # every generated id, end of turn included
    shown: list[int] = field(default_factory=list)  # the ids that make up its text (no special tokens)
    decoded: str = ""
    text: StreamText | None = None  # streaming rows: what the client has been sent
    stopped: bool = False  # a stop string appeared

    @property
    def follows_text(self) -> bool:
        """Whether the row's text is needed at every step: to stream it or to watch for stop strings."""
        return self.text is not None or bool(self.job.params.stop)


class ContinuousBatcher(Batcher):
    thread_name = "vlmforge-continuous"

    def __init__(
        self,
        engine: TextEngine,
        max_batch_size: int = 8,
        window_ms: float = 10.0,
        max_queue: int = 64,
        on_step: Callable[[list[Job]], None] | None = None,
    ):
        super().__init__(engine, max_batch_size, window_ms, max_queue)
        model = engine.model  # type: ignore[attr-defined]
        self.batch = RunningBatch(model, Sampler(model.generation_config, engine.device))  # type: ignore[attr-defined]
        self.on_step = on_step  # told the jobs in the batch before every decode step (tests, metrics)
        self.rows: list[Row] = []
        self._alone = False  # a seeded sample is running: nothing joins it
        tokenizer = engine.tokenizer  # type: ignore[attr-defined]
        self._eos = tokenizer.eos_token_id
        self._special = set(tokenizer.all_special_ids)

    def _work(self) -> None:
        while (jobs := self._admit()) is not None:
            try:
                if jobs:
                    self._prefill(jobs)
                if self.rows:
                    self._step()
            except Exception as err:  # a failed step fails the requests in it, never the worker
                self._drop_all(err)
            self.running = len(self.rows)
        self._drop_all(QueueFull("the server is shutting down"))

    def _drop_all(self, err: Exception) -> None:
        for row in self.rows:
            row.job.emit(Failed(err))
        self.rows, self._alone = [], False
        self.batch.keep([])

    def _admit(self) -> list[Job] | None:
        """The waiting jobs that join at this step (oldest first); None once the batcher is closed."""
        with self._cond:
            while True:
                if not self._open_queue():
                    return None
                wait = self._join_in()
                if wait <= 0:
                    break
                if self.rows:
                    return []  # newcomers wait for company while the batch decodes on
                self._cond.wait(None if wait == float("inf") else wait)
            jobs: list[Job] = []
            room = 0 if self._alone else self.max_batch_size - len(self.rows)
            while self._pending and len(jobs) < room:
                job = self._pending[0]
                if not job.cancelled and runs_alone(job.params):
                    if self.rows or jobs:
                        break  # it waits, and so does everyone behind it, until the batch drains
                    self._alone = True
                    room = 1
                job = self._pending.popleft()
                if not job.cancelled:
                    jobs.append(job)
            self.running = len(self.rows) + len(jobs)
        self._record_admitted(jobs)
        return jobs

    def _join_in(self) -> float:
        """Seconds until the waiting requests should join (0: now). A prefill costs the running rows a step's worth
        of time or more, so arrivals join together: once they fill the batch, once a window passes with no new
        arrival, or at the latest MAX_WINDOWS windows after the oldest came."""
        if not self._pending:
            return float("inf")
        room = self.max_batch_size - len(self.rows)
        if len(self._pending) >= room or self.window_s == 0:
            return 0.0
        now = time.perf_counter()
        newest, oldest = self._pending[-1].submitted, self._pending[0].submitted
        return max(0.0, min(newest + self.window_s, oldest + MAX_WINDOWS * self.window_s) - now)

    def _prefill(self, jobs: list[Job]) -> None:
        """Prefill ``jobs`` together and add them to the batch; if that fails, each alone, so that a bad request
        fails only itself."""
        settings = [RowSampling(job.params.temperature, job.params.top_p) for job in jobs]
        try:
            if len(jobs) == 1 and runs_alone(jobs[0].params):
                torch.manual_seed(jobs[0].params.seed)
            inputs = self.engine.prepare([job.conversation for job in jobs])  # type: ignore[attr-defined]
            start = time.perf_counter()
            tokens = self.batch.prefill(inputs, settings)
            seconds = time.perf_counter() - start
        except Exception as err:
            if len(jobs) > 1:
                for job in jobs:
                    self._prefill([job])
                return
            jobs[0].emit(Failed(err))
            self._alone = self._alone and bool(self.rows)
            return
        self._time_prefill(seconds)
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        self.rows += [
            Row(job, n, text=StreamText(job.params.stop) if job.stream else None)
            for job, n in zip(jobs, prompt_tokens, strict=True)
        ]
        self._advance(len(self.rows) - len(jobs), tokens.tolist())

    def _time_prefill(self, seconds: float) -> None:
        if self.timings is None:
            return
        clocks = getattr(self.engine, "clocks", None)
        vision = clocks.take_vision() if clocks is not None else 0.0
        # the rows already running wait through the prefill too, so it counts in full for each of them
        self.timings.add("vision", vision, self.running)
        self.timings.add("prefill", seconds - vision, self.running)

    def _step(self) -> None:
        if self.on_step:
            self.on_step([row.job for row in self.rows])
        start = time.perf_counter()
        tokens = self.batch.step().tolist()
        if self.timings is not None:
            self.timings.add("decode", time.perf_counter() - start, len(self.rows))
            self.timings.add("decode_steps", 1.0)
        self._advance(0, tokens)

    def _advance(self, first: int, tokens: list[int]) -> None:
        """Give rows ``first``, ``first + 1``, ... their new tokens; hand back and drop the rows that ended."""
        start = time.perf_counter()
        ended: set[int] = set()
        for i, token in enumerate(tokens, start=first):
            row = self.rows[i]
            if row.job.cancelled:  # the client left: free its row
                ended.add(i)
            elif self._add_token(row, token):
                self._finish(row)
                ended.add(i)
        if self.timings is not None:
            self.timings.add("detokenize", time.perf_counter() - start, len(tokens))
        if ended:
            start = time.perf_counter()
            keep = [i for i in range(len(self.rows)) if i not in ended]
            self.batch.keep(keep)
            if self.timings is not None:
                self.timings.add("rebatch", time.perf_counter() - start, len(keep))
            self.rows = [self.rows[i] for i in keep]
            self._alone = self._alone and bool(self.rows)

    def _add_token(self, row: Row, token: int) -> bool:
        """Record ``token``; whether the row has ended."""
        row.tokens.append(token)
        if token == self._eos:
            return True
        if row.follows_text and token not in self._special:
            self._follow_text(row, token)
        return row.stopped or len(row.tokens) >= row.job.params.max_new_tokens

    def _follow_text(self, row: Row, token: int) -> None:
        row.shown.append(token)
        text = self.engine.tokenizer.decode(row.shown)  # type: ignore[attr-defined]
        if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the next token
            return
        delta, row.decoded = text[len(row.decoded) :], text
        if row.text is not None and (released := row.text.feed(delta)) and not row.job.cancelled:
            row.job.emit(Delta(released))
        row.stopped = apply_stop(text, row.job.params.stop)[1]

    def _finish(self, row: Row) -> None:
        completion = self.engine.completion(row.tokens, row.prompt_tokens, row.job.params)  # type: ignore[attr-defined]
        if row.text is not None:
            if released := row.text.finish():
                row.job.emit(Delta(released))
            completion = Completion(
                row.text.text, completion.prompt_tokens, completion.completion_tokens, completion.finish_reason
            )
        row.job.emit(Done(completion))


def make_batcher(engine: TextEngine, settings: ServeSettings) -> Batcher:
    """``settings.batching``'s batcher: continuous where the engine can decode step by step (unless told
    ``dynamic``), else dynamic."""
    reason = stepwise_support(engine)
    if settings.batching == "dynamic" or (settings.batching is None and reason):
        return DynamicBatcher(
            engine,
            settings.max_batch_size,
            settings.batch_window_ms,
            settings.max_queue,
            max_length_ratio=settings.max_length_ratio,
        )
    if reason:
        raise ConfigError(f"--batching continuous is not available for this model: {reason}; use --batching dynamic")
    return ContinuousBatcher(engine, settings.max_batch_size, settings.batch_window_ms, settings.max_queue)
