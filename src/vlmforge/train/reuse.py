"""Which finished or interrupted stage a rerun of `vlmforge train` may reuse.

A stage folder records the settings and inputs it was trained from (``inputs.json``, see vlmforge.provenance).
A rerun skips a finished stage, or resumes an interrupted one, only when they are the same; otherwise it stops
and names the difference, and ``--force`` clears the stage's outputs and trains it again.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from vlmforge.provenance import INPUTS_JSON, check_inputs, path_identity
from vlmforge.train.recipe import Recipe, StageConfig

# What a stage writes into its folder; --force removes exactly these (and its checkpoint-N folders).
STAGE_OUTPUTS = (
    "final",
    "adapter",
    "base",
    "metrics.jsonl",
    "data_order.jsonl",
    "length_grouped_order.jsonl",
    "manifest.json",
    INPUTS_JSON,
)


def stage_inputs(recipe: Recipe, name: str, stage: StageConfig, previous: str | None) -> dict[str, Any]:
    """What a stage's result depends on: the recipe's settings for it (not where it is written) and the identity
    of the models it starts from and the data it reads."""
    m = recipe.model
    models = {"start": previous} if previous else {"vision_model": m.vision_model, "language_model": m.language_model}
    data = {
        "data": stage.data.path,
        "text_only_data": stage.data.text_only_path,
        "generation_data": stage.data.generation_path,
        "image_tokenizer": m.unified.image_tokenizer if m.architecture == "unified" and not previous else None,
        "embeddings": stage.data.embeddings,
        "eval_data": stage.eval_data.path,
    }
    settings = dataclasses.asdict(stage)
    for part in ("data", "eval_data"):  # how much memory keeps processed samples changes no result
        settings[part].pop("image_cache_mb")
        settings[part].pop("token_cache_mb")
    return {
        "seed": recipe.seed,
        "on_error": recipe.on_error,
        "model": dataclasses.asdict(m),
        f"stages.{name}": settings,
        "inputs": {key: path_identity(value) for key, value in {**models, **data}.items() if value},
    }


def check_stage(stage_dir: Path, name: str, inputs: dict[str, Any]) -> None:
    """Stop with the differences named when ``stage_dir`` holds work of this stage made from other inputs."""
    check_inputs(
        stage_dir,
        inputs,
        f"stage '{name}' in {stage_dir}",
        "Pass --force to train it again (its checkpoints and results are deleted), or write elsewhere with --out DIR.",
    )


def clear_stage(stage_dir: Path) -> None:
    """Remove what an earlier run of this stage wrote, so that a forced run neither resumes from nor rotates
    away the old checkpoints."""
    for path in [*stage_dir.glob("checkpoint-*"), *(stage_dir / name for name in STAGE_OUTPUTS)]:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
