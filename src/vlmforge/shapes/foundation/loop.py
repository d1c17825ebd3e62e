"""The optimisation loop shared by the LM and the vision tower.

A plain torch loop instead of ``transformers.Trainer``: the models are tiny, training is single-process on CPU,
runs last a minute, and need no checkpoints, evaluation hooks or distributed setup -- the Trainer machinery would
cost more start-up time and lines than the loop itself. What the loop records (first/final loss, steps, seconds)
goes into the foundation manifest.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup


@dataclass
class TrainLog:
    """What one training run did; ``final_loss`` averages the last few steps so one noisy batch does not lie."""

    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    # Model-specific results worth recording (e.g. the learned SigLIP temperature and bias).
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def first_loss(self) -> float:
        return self.losses[0] if self.losses else math.nan

    @property
    def final_loss(self) -> float:
        tail = self.losses[-max(1, min(10, len(self.losses) // 5)) :]
        return sum(tail) / len(tail) if tail else math.nan

    def summary(self) -> dict[str, float]:
        """JSON-ready numbers for the manifest."""
        return {
            "first_loss": round(self.first_loss, 4),
            "final_loss": round(self.final_loss, 4),
            "steps": len(self.losses),
            "seconds": round(self.seconds, 1),
            **{k: round(v, 4) for k, v in self.extra.items()},
        }


class Optimiser:
    """AdamW with a linear warm-up and cosine decay over ``steps`` scheduled steps, one ``take`` per batch.

    Its ``log`` records every step taken; ``finish()`` closes the progress bar and returns it."""

    def __init__(self, params: Iterable[torch.nn.Parameter], steps: int, lr: float, weight_decay: float,
                 warmup_steps: int, desc: str, progress: bool = True) -> None:  # fmt: skip
        self.params = [p for p in params if p.requires_grad]
        # No weight decay on biases, norms and scalars (temperature, bias): standard for transformers.
        groups = [
            {"params": [p for p in self.params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in self.params if p.ndim < 2], "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.98))
        self.schedule = get_cosine_schedule_with_warmup(self.optimizer, min(warmup_steps, steps // 2), steps)
        self.scheduled = 0  # steps that moved the schedule on
        self.log, self.started = TrainLog(), time.perf_counter()
        self.bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False)

    def take(self, loss: torch.Tensor, advance_schedule: bool = True) -> None:
        """One optimiser step on ``loss``. With ``advance_schedule`` False it is an extra step: taken at the
        current learning rate, and the schedule waits (the log then has more losses than scheduled steps)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.log.losses.append(float(loss.detach()))
        if len(self.log.losses) % 10 == 1:
            held = len(self.log.losses) - self.scheduled - 1
            self.bar.set_postfix(loss=f"{self.log.losses[-1]:.3f}", **({"extra": held} if held else {}))
        if advance_schedule:
            self.schedule.step()
            self.scheduled += 1
            self.bar.update()

    def finish(self) -> TrainLog:
        self.bar.close()
        self.log.seconds = time.perf_counter() - self.started
        return self.log


def run_steps(
    params: Iterable[torch.nn.Parameter],
    loss_fn: Callable[[int], torch.Tensor],
    steps: int,
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    desc: str,
    progress: bool = True,
) -> TrainLog:
    """``steps`` scheduled steps of an ``Optimiser``; ``loss_fn(step)`` computes one batch's loss."""
    optimiser = Optimiser(params, steps, lr, weight_decay, warmup_steps, desc, progress)
    for step in range(steps):
        optimiser.take(loss_fn(step))
    return optimiser.finish()
