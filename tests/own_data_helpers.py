"""Tiny own-data sets for the own-data command's tests: flat-colour images, LLaVA records, no dataset generator."""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}
# A tiny schedule for the tiny models: a handful of steps per stage, small batches.
TINY = [
    "own_data.schedule.pretrain.epochs=1",
    "own_data.schedule.pretrain.min_steps=2",
    "own_data.schedule.finetune.epochs=1",
    "own_data.schedule.finetune.min_steps=3",
    "own_data.schedule.finetune.max_steps=null",
    "own_data.heldout_fraction=0.25",
    *(f"stages.{s}.{k}=4" for s in ("pretrain", "finetune") for k in ("global_batch_size", "per_device_batch_size")),
    "stages.pretrain.save_steps=2",
    "stages.pretrain.logging_steps=1",
    "stages.finetune.save_steps=2",
    "stages.finetune.learning_rate=1e-3",
]


def colour_records(root: Path, images: int = 16, captions: bool = False) -> Path:
    """``images`` flat-colour pictures, each with a colour question (kind ``colour``) and a question whose answer
    has nothing to do with the picture (kind ``coin``); with ``captions``, each colour record carries a caption."""
    root.mkdir(parents=True, exist_ok=True)
    rng, rows = random.Random(0), []
    for i in range(images):
        name, rgb = list(COLOURS.items())[i % len(COLOURS)]
        Image.new("RGB", (32, 32), rgb).save(root / f"{i}.png")
        colour = {"id": f"c{i}", "image": f"{i}.png", "kind": "colour",
                  "conversations": [{"from": "human", "value": "<image>\nWhat colour is it?"},
                                    {"from": "gpt", "value": name}]}  # fmt: skip
        if captions:
            colour["caption"] = f"a {name} square"
        coin = {"id": f"k{i}", "image": f"{i}.png", "kind": "coin",
                "conversations": [{"from": "human", "value": "<image>\nHeads or tails?"},
                                  {"from": "gpt", "value": rng.choice(["heads", "tails"])}]}  # fmt: skip
        rows += [colour, coin]
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
