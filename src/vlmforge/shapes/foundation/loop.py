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


def run_steps(
    params: Iterable[torch.nn.Parameter],
    loss_fn: Callable[[int], torch.Tensor],
    steps: int,
    lr: float,
    weight_decay: float,
    warmup_steps: int,
    desc: str,
    progress: bool = True,
    stop: Callable[[int], bool] | None = None,
    hold: Callable[[int], bool] | None = None,
) -> TrainLog:
    """AdamW + linear warmup + cosine decay for ``steps`` steps; ``loss_fn(step)`` computes one batch's loss.

    ``stop(step)``, asked before each step, ends the run early (the log then has fewer losses than ``steps``).
    ``hold(step)``, asked next, makes this an extra step: taken at the current learning rate without moving the
    schedule on, so ``step`` comes again (the log then has more losses than ``steps``)."""
    params = [p for p in params if p.requires_grad]
    # No weight decay on biases, norms and scalars (temperature, bias): standard for transformers.
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.98))
    schedule = get_cosine_schedule_with_warmup(optimizer, min(warmup_steps, steps // 2), steps)
    log, start = TrainLog(), time.perf_counter()
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False)
    step = 0
    while step < steps:
        if stop is not None and stop(step):
            break
        extra = hold is not None and hold(step)
        loss = loss_fn(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        log.losses.append(float(loss.detach()))
        if len(log.losses) % 10 == 1:
            bar.set_postfix(loss=f"{log.losses[-1]:.3f}", **({"extra": len(log.losses) - step} if extra else {}))
        if not extra:
            schedule.step()
            step += 1
            bar.update()
    bar.close()
    log.seconds = time.perf_counter() - start
    return log
