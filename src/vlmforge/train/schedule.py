"""How many optimizer steps a stage takes, from the size of its data.

A schedule written in epochs means something else on every data set: a fraction of an epoch that is hundreds of
steps on a large set is a few dozen on a small one, too few for a model to learn anything but the answer prior.
So a stage is sized in optimizer steps: ``epochs`` passes over the records, but never fewer than ``min_steps``
(nor more than ``max_steps`` when set). A stage left with fewer than ``WARN_BELOW`` steps gets a warning that
names the numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WARN_BELOW = 100  # steps; below this a stage rarely gets past the answer prior


@dataclass
class StepSchedule:
    """How to size one stage: passes over the data, bounded below (and optionally above) in optimizer steps."""

    epochs: float = 1.0
    min_steps: int = 0
    max_steps: int | None = None


def epoch_steps(records: int, global_batch: int, epochs: float) -> int:
    """Optimizer steps of ``epochs`` passes over ``records`` at ``global_batch`` samples per step."""
    if global_batch < 1:
        raise ValueError(f"global batch must be at least 1, got {global_batch}")
    return max(1, math.ceil(epochs * records / global_batch)) if records else 0


def size_stage(records: int, global_batch: int, schedule: StepSchedule) -> int:
    """The stage's optimizer steps: ``schedule.epochs`` passes, raised to ``min_steps``, capped at ``max_steps``."""
    steps = max(epoch_steps(records, global_batch, schedule.epochs), schedule.min_steps)
    return min(steps, schedule.max_steps) if schedule.max_steps else steps


def short_stage_warning(name: str, records: int, global_batch: int, steps: int, warn_below: int = WARN_BELOW) -> str:
    """A warning naming the numbers when a stage has fewer than ``warn_below`` optimizer steps, else ''."""
    if steps >= warn_below:
        return ""
    return (
        f"[{name}] warning: only {steps} optimizer steps ({records} records, global batch {global_batch}, "
        f"{steps * global_batch / max(records, 1):.2g} epochs); a stage this short often learns only the answer "
        f"prior. Size it in steps (e.g. --set stages.{name}.max_steps=N) or use more epochs."
    )
