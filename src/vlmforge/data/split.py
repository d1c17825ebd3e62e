"""A seeded held-out split of records by image, so that one image never lands on both sides.

Several records often ask about the same picture; splitting records instead of images would let a model answer a
held-out question from a training record of the same image, and the held-out score would measure memory, not
reading. Records without an image (text-only) always stay in training.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from vlmforge.data.validate import record_images


@dataclass
class Split:
    train: list[dict]
    heldout: list[dict]
    heldout_images: list[str]

    def summary(self, seed: int, fraction: float) -> dict:
        """What the manifest records: how the split was drawn and its sizes."""
        return {
            "by": "image",
            "seed": seed,
            "fraction": fraction,
            "train_records": len(self.train),
            "heldout_records": len(self.heldout),
            "heldout_images": len(self.heldout_images),
        }


def image_key(record: dict) -> str | None:
    """The images a record shows, as one key (None for a text-only record)."""
    images = record_images(record)
    return "|".join(images) if images else None


def split_by_image(records: Sequence[dict], fraction: float, seed: int, max_images: int | None = None) -> Split:
    """Hold out ``fraction`` of the distinct images (at least one, at most ``max_images``) with all their records;
    the same records, fraction and seed always give the same split, in the records' own order."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must be between 0 and 1, got {fraction}")
    images = sorted({key for key in map(image_key, records) if key is not None})
    if len(images) < 2:
        raise ValueError(f"a held-out split needs at least 2 distinct images, the records show {len(images)}")
    count = min(len(images) - 1, max(1, round(fraction * len(images))))
    if max_images is not None:
        count = min(count, max_images)
    held = set(random.Random(seed).sample(images, count))
    train = [r for r in records if image_key(r) not in held]
    heldout = [r for r in records if image_key(r) in held]
    return Split(train, heldout, sorted(held))
