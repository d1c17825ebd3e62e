"""A tiny unified-model training setup written to disk: an 8 px three-colour world, a 16-code patch tokenizer
(random centroids: 2 x 2 codes per image), a tiny LM, and the three kinds of records."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vlmforge.shapes.foundation.patch_tokenizer import PatchTokenizer
from vlmforge.testing.tiny import save_tiny_lm

PALETTE = [(0, 0, 0), (255, 0, 0), (0, 0, 255)]
COLOURS = {1: "red", 2: "blue"}


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def tiny_unified_setup(root: Path, images: int = 24) -> dict[str, Path]:
    """Images whose left half is one colour and right half another; captions and answers name them."""
    torch.manual_seed(0)
    tokenizer_dir = PatchTokenizer(torch.rand(16, 4 * 4 * len(PALETTE)), PALETTE, 4, 8).save(root / "patch")
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    understanding, generation = [], []
    for i in range(images):
        left, right = rng.choice([1, 2]), rng.choice([1, 2])
        image = Image.new("RGB", (8, 8), PALETTE[left])
        image.paste(PALETTE[right], (4, 0, 8, 8))
        name = f"images/{i:03d}.png"
        image.save(root / name)
        caption = f"a {COLOURS[left]} circle and a {COLOURS[right]} square"
        question = {"from": "human", "value": "<image>\nWhat colour is the circle?"}
        understanding.append({"id": f"u{i}", "image": name, "conversations": [question,
                              {"from": "gpt", "value": COLOURS[left]}]})  # fmt: skip
        generation.append({"id": f"g{i}", "image": name, "caption": caption})
    text = [{"id": f"t{i}", "text": "two blue squares and a green triangle"} for i in range(images)]
    return {
        "root": root,
        "lm": save_tiny_lm(root / "lm", hidden=32, layers=4),
        "image_tokenizer": tokenizer_dir,
        "understanding": _write(root / "understanding.jsonl", understanding),
        "generation": _write(root / "generation.jsonl", generation),
        "text": _write(root / "text.jsonl", text),
    }


def unified_recipe(setup: dict[str, Path], out: Path, arm: str = "two_end", **stage: Any) -> dict[str, Any]:
    data = {
        "path": str(setup["understanding"]),
        "generation_path": str(setup["generation"]),
        "text_only_path": str(setup["text"]),
        "image_folder": str(setup["root"]),
        "codes": str(setup["root"] / "codes"),
        "mix": {"understanding": 0.4, "generation": 0.4, "text": 0.2, "samples": 64},
    }
    layers = {"encode_layers": 1, "decode_layers": 1} if arm == "two_end" else {}
    return {
        "name": "tiny-unified",
        "output_dir": str(out),
        "seed": 0,
        "model": {"architecture": "unified", "language_model": str(setup["lm"]),
                  "unified": {"arm": arm, "image_tokenizer": str(setup["image_tokenizer"]), **layers}},
        "stages": {"finetune": {"data": data, "learning_rate": 3e-3, "epochs": 2, "global_batch_size": 8,
                                "per_device_batch_size": 8, "max_length": 128, "save_steps": 100, "logging_steps": 2,
                                "batching": "padding", "warmup_ratio": 0.0, **stage}},
    }  # fmt: skip
