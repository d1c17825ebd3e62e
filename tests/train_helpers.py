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

from test_train import COLOURS, CrashAfter, tiny_data  # noqa: F401  (fixture re-exported)


def finetune_only_recipe(
    out: Path,
    data: Path,
    parts: tuple[Path, Path] | None = None,
    *,
    init_from: Path | None = None,
    top: dict[str, Any] | None = None,
    **finetune: Any,
) -> dict[str, Any]:
    """One finetune stage on the colour questions: 16 samples, global batch 4 (2 per device), 4 steps/epoch."""
    model = (
        {"init_from": str(init_from)} if init_from else {"vision_model": str(parts[0]), "language_model": str(parts[1])}
    )
    stage = {
        "data": {"path": str(data / "qa.jsonl")},
        "learning_rate": 1e-3,
        "global_batch_size": 4,
        "per_device_batch_size": 2,
        "epochs": 1,
        "logging_steps": 1,
        "save_steps": 100,
        **finetune,
    }
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
