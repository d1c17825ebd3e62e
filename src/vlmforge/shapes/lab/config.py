"""What one run of the shapes lab does: its seeds, recipes, world size and the settings passed down."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class LabConfig:
    out: Path
    seeds: tuple[int, ...] = (0, 1, 2)
    recipes: tuple[str, ...] = ("bunny",)
    foundation_dir: Path | None = None  # default: OUT/foundation (reused when its manifest matches)
    train_images: int = 3000
    test_images: int = 300
    world_seed: int = 0
    foundation_overrides: dict[str, Any] = field(default_factory=dict)
    recipe_overrides: tuple[str, ...] = ()
    eval_batch_size: int = 64
    # A recipe's seeds train side by side, this many at a time (shapes/lab/side_by_side.py): the lab's tiny models
    # gain only part of a second thread, and loading, encoding and evaluation mostly run on one.
    workers: int = 3
    eval_max_new_tokens: int | None = None  # None: each task's own limit (tests cap it for speed)
    long_run: bool = False  # --long: also the Uni-X lab's longer training and larger GenEval (lab/unix.py)

    @classmethod
    def quick(cls, out: Path, **kwargs) -> LabConfig:
        """A small lab for CI: one seed, a smaller world, shorter training. Numbers are noisier, not meaningful."""
        defaults = dict(
            seeds=(0,), train_images=600, test_images=60,
            # One reading attempt: 60 steps never meet the pass marks, so restarts would only triple the time.
            foundation_overrides={"vision.epochs": 3, "reader.steps": 60, "reader.attempts": 1, "holdout": 64},
            recipe_overrides=("stages.finetune.epochs=1",),
        )  # fmt: skip
        defaults.update(kwargs)
        return cls(out=out, **defaults)

    @classmethod
    def long(cls, out: Path, **kwargs) -> LabConfig:
        """The default lab with a longer box phase that also teaches multiple choice (``LONG_FOUNDATION``)."""
        overrides = {**LONG_FOUNDATION, **kwargs.pop("foundation_overrides", {})}
        return cls(out=out, foundation_overrides=overrides, long_run=True, **kwargs)


# What the default lab leaves out for time: boxes and multiple choice need thousands of box-phase steps of their
# own in the foundation reader, with multiple choice drawn afresh in most of each batch (docs/foundation.md).
LONG_FOUNDATION: dict[str, Any] = {"reader.box_steps": 4000, "reader.mc_fraction": 0.625, "reader.box_fraction": 0.25}
