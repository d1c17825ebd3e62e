"""Where a request's time goes: seconds per stage, summed over requests, behind ``GET /timings``.

Two views of each stage. ``wall_ms`` is how long a request spent in it: a batch stage counts in full for every
request of the batch, so the stages add up to the request's latency. ``busy_ms`` is the server's work on it shared
out: a batch stage's time divided among the batch's requests, so it tells what limits throughput.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from vlmforge.stage_clock import STAGES as GENERATION_STAGES

STAGES = {
    "request": "the whole request, as the ASGI app saw it",
    "images": "image URL decoding (base64, PNG/JPEG)",
    "queue": "waiting in the queue and the batch window",
    **GENERATION_STAGES,
    "rebatch": "continuous batching: dropping finished rows from the running batch's KV cache",
    "wakeup": "the event loop taking the result from the worker",
    "respond": "building the response",
}
COUNTS = {"decode_steps"}  # counted, not timed
OTHER = "HTTP, JSON parsing and validation, serialisation, scheduling"


class StageTimings:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._wall: dict[str, float] = defaultdict(float)
            self._busy: dict[str, float] = defaultdict(float)
            self._requests = self._batches = self._rows = 0

    def add(self, stage: str, seconds: float, rows: int = 1) -> None:
        """``seconds`` of ``stage`` shared by ``rows`` requests (a batch's, or one request's)."""
        with self._lock:
            self._wall[stage] += seconds * rows
            self._busy[stage] += seconds

    def batch(self, rows: int) -> None:
        with self._lock:
            self._batches += 1
            self._rows += rows

    def finished(self, seconds: float) -> None:
        """A chat completion request ended after ``seconds``."""
        with self._lock:
            self._requests += 1
            self._wall["request"] += seconds
            self._busy["request"] += seconds

    def report(self) -> dict[str, Any]:
        with self._lock:
            n = max(self._requests, 1)
            stages = {
                stage: {"wall_ms": self._wall[stage] * 1000 / n, "busy_ms": self._busy[stage] * 1000 / n}
                for stage in STAGES
                if stage in self._wall
            }
            inside = sum(v["wall_ms"] for k, v in stages.items() if k != "request")
            busy = sum(v["busy_ms"] for k, v in stages.items() if k in GENERATION_STAGES)
            if "request" in stages:
                stages["other"] = {"wall_ms": stages["request"]["wall_ms"] - inside, "busy_ms": None}
            return {
                "requests": self._requests,
                "batches": self._batches,
                "mean_batch_size": self._rows / max(self._batches, 1),
                "decode_steps_per_batch": self._busy["decode_steps"] / max(self._batches, 1),
                "worker_busy_ms": busy,
                "stages": stages,
                "descriptions": {**STAGES, "other": OTHER},
            }


class TimingMiddleware:
    """Times each chat completion request from the ASGI app's start to its last byte."""

    def __init__(self, app: Callable[..., Awaitable[None]], timings: StageTimings, path: str = "/v1/chat/completions"):
        self.app, self.timings, self.path = app, timings, path

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.timings.finished(time.perf_counter() - start)
