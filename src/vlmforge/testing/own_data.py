"""Two procedural datasets that are not the shapes world, shaped like a user's own small dataset: LLaVA records,
one question per image, one phrasing per question kind in training, no captions.

- ``glyphs``: a seven-segment digit on a textured grey background. Kinds: ``digit`` (0-9), ``digit_colour``,
  ``pattern`` (the background's texture).
- ``pairs``: a large light-grey outline object with a small coloured dot beside it. Kinds: ``object``,
  ``relation`` (the dot's side of the object), ``dot_colour``.

Each build writes ``train.jsonl``, ``test.jsonl`` (the training phrasings, unseen images) and
``test_reworded.jsonl`` (the same test images and kinds, asked in phrasings that never occur in training), with the
PNG images under ``images/``. With ``--val N`` it also writes ``val.jsonl`` and ``val_reworded.jsonl`` on N images
of their own: settings are chosen on those, so that the test files stay an unbiased report. Records carry ``kind``,
``answer`` and the ``scene`` they were drawn from. Deterministic by seed, and each split draws from its own stream,
so adding a validation split leaves the training and test files unchanged::

    python -m vlmforge.testing.own_data --kind glyphs --out data/glyphs --train 2000 --test 300 --val 300
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vlmforge.testing import own_data_draw as draw

_GLYPH_COLOURS = ("red", "blue", "green", "yellow", "pink", "cyan")
_DOT_COLOURS = ("red", "blue", "green", "yellow", "pink", "white")


@dataclass(frozen=True)
class Kind:
    """One question kind: its answers, the one training phrasing, and held-out rewordings."""

    answers: tuple[str, ...]
    question: str
    rewordings: tuple[str, ...]


@dataclass(frozen=True)
class Dataset:
    kinds: dict[str, Kind]
    scene: Callable[[np.random.Generator], dict]  # draws a random scene: each kind's answer plus layout
    render: Callable[[dict, np.random.Generator], Image.Image]


def _glyph_scene(rng: np.random.Generator) -> dict:
    return {
        "digit": str(rng.integers(10)),
        "digit_colour": _GLYPH_COLOURS[rng.integers(len(_GLYPH_COLOURS))],
        "pattern": draw.PATTERNS[rng.integers(len(draw.PATTERNS))],
        "xy": [
            int(c + rng.integers(-3, 4)) for c in ((draw.SIZE - draw.GLYPH_W) // 2, (draw.SIZE - draw.GLYPH_H) // 2)
        ],
    }


def _pair_scene(rng: np.random.Generator) -> dict:
    return {
        "object": draw.OBJECTS[rng.integers(len(draw.OBJECTS))],
        "relation": list(draw.RELATIONS)[rng.integers(len(draw.RELATIONS))],
        "dot_colour": _DOT_COLOURS[rng.integers(len(_DOT_COLOURS))],
        "centre": [int(32 + rng.integers(-3, 4)), int(32 + rng.integers(-3, 4))],
    }


DATASETS = {
    "glyphs": Dataset(
        kinds={
            "digit": Kind(
                tuple(draw.DIGIT_SEGMENTS),
                "Which digit is drawn in the image?",
                ("Name the digit you can see.", "What number is shown here?", "Tell me which numeral appears."),
            ),
            "digit_colour": Kind(
                _GLYPH_COLOURS,
                "What colour is the digit?",
                (
                    "Tell me the colour of the digit in this picture.",
                    "Which colour is the numeral painted in?",
                    "The digit: what colour is it?",
                ),
            ),
            "pattern": Kind(
                draw.PATTERNS,
                "What pattern fills the background?",
                (
                    "Describe the background's texture in one word.",
                    "Tell me the pattern behind the digit.",
                    "Which texture does the picture's background have?",
                ),
            ),
        },
        scene=_glyph_scene,
        render=lambda s, rng: draw.draw_digit(s["digit"], s["digit_colour"], s["pattern"], tuple(s["xy"]), rng),
    ),
    "pairs": Dataset(
        kinds={
            "object": Kind(
                draw.OBJECTS,
                "What is the large object?",
                (
                    "Name the big shape in the picture.",
                    "Which object is the larger one?",
                    "Tell me what the large shape is.",
                ),
            ),
            "relation": Kind(
                tuple(draw.RELATIONS),
                "Where is the dot relative to the large object?",
                (
                    "On which side of the big shape is the dot?",
                    "Tell me where the small dot sits next to the object.",
                    "The dot is on which side of the large shape?",
                ),
            ),
            "dot_colour": Kind(
                _DOT_COLOURS,
                "What colour is the dot?",
                (
                    "Tell me the colour of the small dot.",
                    "Which colour does the dot have?",
                    "The dot: what colour is it?",
                ),
            ),
        },
        scene=_pair_scene,
        render=lambda s, rng: draw.draw_pair(s["object"], s["relation"], s["dot_colour"], tuple(s["centre"]), rng),
    ),
}


def _record(name: str, split: str, index: int, kind: str, question: str, scene: dict) -> dict:
    return {
        "id": f"{name}-{split}-{index:05d}",
        "image": f"images/{split}-{index:05d}.png",
        "conversations": [
            {"from": "human", "value": f"<image>\n{question}"},
            {"from": "gpt", "value": scene[kind]},
        ],
        "kind": kind,
        "answer": scene[kind],
        "scene": scene,
    }


# Each split's random stream: a split added later draws nothing from the others'.
_SPLIT_SEED_OFFSETS = {"train": 0, "test": 1_000_003, "val": 2_000_003}


def build(name: str, out: str | Path, train: int, test: int, seed: int = 0, val: int = 0) -> dict[str, Path]:
    """Render ``train`` + ``test`` (+ ``val``) images of dataset ``name`` into ``out`` and write its record files:
    train, test and test_reworded, and val and val_reworded when ``val`` > 0."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; datasets: {', '.join(DATASETS)}")
    dataset, out = DATASETS[name], Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    kinds = list(dataset.kinds)
    counts = {"train": train, "test": test, **({"val": val} if val else {})}
    files: dict[str, list[dict]] = {}
    for split, count in counts.items():
        files[split] = []
        if split != "train":
            files[f"{split}_reworded"] = []
        rng = np.random.default_rng(seed + _SPLIT_SEED_OFFSETS[split])
        for index in range(count):
            scene = dataset.scene(rng)
            dataset.render(scene, rng).save(out / "images" / f"{split}-{index:05d}.png")
            kind = kinds[int(rng.integers(len(kinds)))]
            files[split].append(_record(name, split, index, kind, dataset.kinds[kind].question, scene))
            if split != "train":
                rewordings = dataset.kinds[kind].rewordings
                question = rewordings[int(rng.integers(len(rewordings)))]
                files[f"{split}_reworded"].append(_record(name, split, index, kind, question, scene))
    paths = {}
    for split, records in files.items():
        paths[split] = out / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(r) + "\n" for r in records))
    return paths


def answers_by_kind(name: str) -> dict[str, tuple[str, ...]]:
    """Every possible answer of each kind: an answer outside its kind's set is an answer of the wrong kind."""
    return {kind: spec.answers for kind, spec in DATASETS[name].kinds.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=sorted(DATASETS), required=True, help="which data set to draw")
    parser.add_argument("--out", required=True, help="folder for the record files and images/")
    parser.add_argument("--train", type=int, default=2000, help="training images, one question each (default: 2000)")
    parser.add_argument("--test", type=int, default=300, help="test images, for the report (default: 300)")
    parser.add_argument("--val", type=int, default=0, help="validation images, to choose settings on (default: none)")
    parser.add_argument("--seed", type=int, default=0, help="the same seed draws the same files (default: 0)")
    args = parser.parse_args(argv)
    paths = build(args.kind, args.out, args.train, args.test, args.seed, args.val)
    val = f" + {args.val} validation" if args.val else ""
    print(f"{args.kind}: {args.train} train + {args.test} test{val} images -> {', '.join(map(str, paths.values()))}")


if __name__ == "__main__":
    main()
