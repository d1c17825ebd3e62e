"""Restarts of the reading phase: run it again from a new start while the reader misses its pass marks.

Why: whether the phase forms the colour lookup ("What colour is the star?"), and with it existence, depends on its
random start; no change was found that makes every start succeed, so a failed reader is caught and replaced. The
check is the reader's own answers to its train scenes' questions (a failed start fails on the scenes it trained
on too, so the test split is never needed). A start that misses the warm-up marks even after its warm-up was
extended stops there, except the last, so that a complete reader is always kept; of readers that all miss, the
closest to passing is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from vlmforge.shapes.foundation import lm
from vlmforge.shapes.foundation.reader import ReaderSpec, teach_reading
from vlmforge.shapes.foundation.reading import object_reading_accuracy

# Attempt k of the reading phase starts from seed + k * RESTART_SEED_STRIDE: far from the seeds of other builds.
RESTART_SEED_STRIDE = 1000


def listed(scores: dict[str, float]) -> str:
    return ", ".join(f"{task} {value}" for task, value in scores.items())


class ReadingRestarts:
    """The reading phase of a foundation build (``spec``: its ``FoundationSpec``), with its restarts.

    ``run`` returns the model holding the attempt that passed, or the one closest to passing; the manifest's record
    of it and of every attempt; and the seed its object codes were drawn from (the held-out reading test must draw
    the same)."""

    def __init__(self, tokenizer: Any, world_dir: str | Path, world: Any, spec: Any, say: Callable[[str], Any],
                 progress: bool) -> None:  # fmt: skip
        self.tokenizer, self.world_dir, self.world, self.spec = tokenizer, world_dir, world, spec
        self.say, self.progress = say, progress
        reader = spec.reader
        self.marks = reader.pass_marks
        self.warm_marks = {t: m for t, m in reader.warm_marks.items() if t in reader.warm_tasks}
        self.unchecked: set[str] = set()  # pass marks on tasks with no questions to check them on
        self.unchecked_warm = sorted(set(reader.warm_marks) - set(self.warm_marks))
        for task in self.unchecked_warm:
            say(f"foundation: warm-up mark for {task!r} not checked: it is not among the warm-up tasks")

    def check(self, model: Any, seed: int, marks: dict[str, float], tasks: tuple[str, ...] | None = None):
        """The train scenes' reading scores (of ``tasks``, default all) and the ``marks`` they miss."""
        scores = object_reading_accuracy(model, self.tokenizer, self.world_dir, self.world.regions, self.spec.vision,
                                         self.spec.reader, seed, split="train", tasks=tasks)  # fmt: skip
        scores = {t: round(v, 4) for t, v in scores.items()}
        # A mark on a task with no questions here cannot be checked: say so once rather than count it met in silence.
        for task in sorted(set(marks) - set(scores) - self.unchecked):
            self.unchecked.add(task)
            self.say(f"foundation: pass mark for {task!r} not checked: the reading phase asks no {task} questions")
        return scores, {t: scores[t] for t, mark in marks.items() if t in scores and scores[t] < mark}

    def warm_check(self, model: Any, seed: int, record: dict[str, Any]) -> bool:
        """Whether a start's warm-up lookups formed (``teach_reading``'s ``after_warm``), noted in its record."""
        record["warm_reading"], record["missed"] = self.check(model, seed, self.warm_marks, tuple(self.warm_marks))
        return not record["missed"]

    def attempt(self, model: Any, seed: int, reader: ReaderSpec, last: bool) -> tuple[dict[str, Any], Any]:
        """One start of the phase on ``model``; its record (scored on the train scenes unless it stopped after
        its warm-up) and log."""
        record: dict[str, Any] = {"seed": seed, "lr": reader.lr}
        after_warm = partial(self.warm_check, model, seed, record) if self.warm_marks else None
        log = teach_reading(model, self.tokenizer, self.world_dir, self.world.image_paths, self.world.regions,
                            self.spec.vision, reader, seed, self.progress, after_warm, give_up=not last)  # fmt: skip
        record["final_loss"] = round(log.final_loss, 4)
        record["warm_extension"] = int(log.extra.get("warm_extension", 0))
        if record["warm_extension"]:
            self.say(f"foundation: the warm-up went on {record['warm_extension']} steps past its end (warm-up "
                     f"reading on the train scenes then: {listed(record['warm_reading'])})")  # fmt: skip
        if "stopped_after_warm" in log.extra:
            record["stopped_after_warm"] = int(log.extra["stopped_after_warm"])
        else:
            record["train_reading"], record["missed"] = self.check(model, seed, self.marks)
        return record, log

    def run(self, model: Any, seed: int) -> tuple[Any, dict[str, Any], int]:
        spec = self.spec
        pretrained = {k: v.clone() for k, v in model.state_dict().items()} if spec.lm.steps else None
        n_attempts, attempts, best = max(1, spec.reader.attempts), [], None
        for attempt in range(n_attempts):
            attempt_seed = seed + attempt * RESTART_SEED_STRIDE
            reader = spec.reader
            if attempt:  # a fresh start (the text-pretrained weights again, or a new LM) at its own rate
                model = self.fresh_start(model, pretrained, attempt_seed)
                reader = replace(reader, lr=reader.restart_lr) if reader.restart_lr else reader
            self.say(f"foundation: teaching the LM to read object vectors ({reader.steps} steps, attempt "
                     f"{attempt + 1}, seed {attempt_seed}, lr {reader.lr:g})")  # fmt: skip
            record, log = self.attempt(model, attempt_seed, reader, last=attempt == n_attempts - 1)
            attempts.append(record)
            if "stopped_after_warm" not in record:
                shortfall = sum(self.marks[t] - v for t, v in record["missed"].items())
                if best is None or shortfall < best[0]:
                    best = (shortfall, {k: v.clone() for k, v in model.state_dict().items()}, log, attempt_seed)
                if not record["missed"]:
                    break
            self.say_missed(record)
        shortfall, state, log, attempt_seed = best
        model.load_state_dict(state)
        if shortfall > 0:
            self.say(f"foundation: WARNING: no reading attempt met the pass marks ({listed(self.marks)}); keeping "
                     f"seed {attempt_seed}, the closest (its answers will be poor on the tasks it missed; "
                     "docs/foundation.md)")  # fmt: skip
        summary = {**log.summary(), "seed": attempt_seed, "passed": shortfall == 0, "attempts": attempts,
                   "unchecked_marks": {"pass": sorted(self.unchecked), "warm": self.unchecked_warm}}  # fmt: skip
        return model, summary, attempt_seed

    def fresh_start(self, model: Any, pretrained: dict | None, seed: int) -> Any:
        if pretrained is None:
            return lm.new_lm(self.tokenizer, self.spec.lm, seed)
        model.load_state_dict(pretrained)
        return model

    def say_missed(self, record: dict[str, Any]) -> None:
        early = "stopped_after_warm" in record
        when, applied = ("when its warm-up ended", self.warm_marks) if early else ("after the phase", self.marks)
        self.say(f"foundation: the reader missed its pass marks ({listed(applied)}) on its train scenes {when}: "
                 f"{listed(record['missed'])}")  # fmt: skip
