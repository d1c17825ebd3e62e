"""Shared pieces of the training tests: tiny recipes written as YAML, state dicts, and the crash callback.

The colour data set (`tiny_data` fixture) and `CrashAfter` live in test_train.py; they are re-exported here so
the other training test files import them from one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import AutoModelForImageTextToText

from test_train import COLOURS, CrashAfter, finetune_stage, tiny_data  # noqa: F401  (fixture re-exported)


def finetune_only_recipe(
    out: Path,
    data: Path,
    parts: tuple[Path, Path] | None = None,
    *,
    init_from: Path | None = None,
    top: dict[str, Any] | None = None,
    **finetune: Any,
) -> dict[str, Any]:
    """A recipe with only test_train's tiny finetune stage (checkpoints every 100 steps unless told)."""
    model = (
        {"init_from": str(init_from)} if init_from else {"vision_model": str(parts[0]), "language_model": str(parts[1])}
    )
    stage = finetune_stage(data, **{"save_steps": 100, **finetune})
    return {
        "name": "tiny",
        "output_dir": str(out),
        "seed": 3,
        "model": model,
        "stages": {"finetune": stage},
        **(top or {}),
    }


def write_yaml(path: Path, recipe: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A saved LLaVA checkpoint's weights, loaded the standard way (the llava-hf key layout is mapped back)."""
    return {k: v.clone() for k, v in AutoModelForImageTextToText.from_pretrained(path).state_dict().items()}
