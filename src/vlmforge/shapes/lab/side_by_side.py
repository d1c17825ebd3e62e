"""Independent lab runs side by side, each in a worker process with its share of the CPU threads.

A tiny model on short records does not keep several threads busy, so on a CPU two one-thread runs side by side
finish sooner than the same two runs one after the other with two threads each (runs on long records do use the
threads and gain nothing from it). Each job's output goes to a log file of its own (two progress bars on one
terminal would overwrite each other); the lab prints one line per finished job.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from vlmforge.errors import VlmforgeError

Job = tuple[str, tuple[Any, ...]]  # (name, the arguments of the work function)


class SideBySideError(VlmforgeError):
    """A job run in a worker process failed; the message names its log."""


def _start_worker(threads: int) -> None:
    import torch

    from vlmforge import console

    torch.set_num_threads(threads)
    console.configure(verbose=False)  # a spawned process starts with the libraries' defaults


def _logged(log: Path, work: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        return work(*args)


def run_side_by_side(
    work: Callable[..., Any], jobs: Sequence[Job], *, workers: int, logs: Path, label: str
) -> list[Any]:
    """``work(*args)`` for every ``(name, args)`` of ``jobs``, ``workers`` at a time, each worker with this
    process's threads divided among them; the results in the order of ``jobs``. A job's output goes to
    ``logs/NAME.log``. ``workers <= 1`` (or a single job) runs them here, one after the other, printing as usual.
    ``work`` and the arguments must be importable and picklable (a module-level function, plain data)."""
    if workers <= 1 or len(jobs) <= 1:
        return [work(*args) for _, args in jobs]
    import torch

    threads = max(1, torch.get_num_threads() // workers)
    results: list[Any] = [None] * len(jobs)
    context = multiprocessing.get_context("spawn")  # a forked process would inherit torch's thread pools
    start = time.perf_counter()
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(threads,)) as pool:
        pending = {pool.submit(_logged, logs / f"{name}.log", work, args): i for i, (name, args) in enumerate(jobs)}
        print(f"[{label}] {len(jobs)} runs, {workers} at a time with {threads} thread(s) each; logs in {logs}")
        for done, future in enumerate(as_completed(pending), start=1):
            index = pending[future]
            name = jobs[index][0]
            try:
                results[index] = future.result()
            except Exception as err:
                for other in pending:
                    other.cancel()
                raise SideBySideError(f"{label}: {name} failed ({err}); its output is in {logs / name}.log") from err
            print(f"[{label}] {done}/{len(jobs)} {name} done ({time.perf_counter() - start:.0f} s)", flush=True)
    return results
