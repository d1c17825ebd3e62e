"""The batches of the modality-conflict analysis, built from LLaVA conversation records.

Each record gives its first question and answer. A multimodal sample is ``understanding_sample`` with the
record's image as codes; a text sample is the same layout without an image (``codes=None``). Both train the
answer and its end of turn only, so the text and multimodal sides mask their labels identically and the
comparison measures the modality, not the masking. Every model compared gets the very same batches.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vlmforge.data.collate import PaddingCollator
from vlmforge.data.images import load_image
from vlmforge.data.records import read_records
from vlmforge.errors import ConfigError, DataError
from vlmforge.models.unified.prompts import understanding_sample


@dataclass
class Turn:
    where: str
    question: str
    answer: str
    image: Path | None


def first_turns(path: str | Path, images: str | Path | None = None) -> list[Turn]:
    """Each record's first human question and the answer that follows it; images resolved against ``images``
    (default: the records file's folder)."""
    path = Path(path)
    root = Path(images) if images else (path if path.is_dir() else path.parent)
    turns = []
    for where, record in read_records(path):
        conversation = record.get("conversations") or []
        if len(conversation) < 2 or conversation[0].get("from") != "human" or conversation[1].get("from") != "gpt":
            raise DataError(where, "the conflict analysis needs a first human turn answered by a gpt turn")
        question = str(conversation[0]["value"]).replace("<image>", "").strip()
        image = root / record["image"] if record.get("image") else None
        turns.append(Turn(where, question, str(conversation[1]["value"]), image))
    if not turns:
        raise ConfigError(f"{path}: no records")
    return turns


def pick(turns: Sequence[Turn], count: int, seed: int, what: str) -> list[Turn]:
    """``count`` turns drawn without replacement, the same ones for a given seed."""
    if len(turns) < count:
        raise ConfigError(f"{what}: {count} samples needed (batches x batch size), only {len(turns)} records")
    return random.Random(seed).sample(list(turns), count)


def conflict_batches(turns: Sequence[Turn], processor, batch_size: int, with_images: bool) -> list[dict]:
    """Padded batches of ``batch_size`` samples (the last may be smaller); ``processor`` is a unified model's
    ``UnifiedChatProcessor``. ``with_images`` False leaves every image out."""
    tokenizer, config = processor.tokenizer, processor.config
    pad = PaddingCollator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    batches = []
    for start in range(0, len(turns), batch_size):
        chunk = turns[start : start + batch_size]
        codes: list[list[int] | None] = [None] * len(chunk)
        if with_images:
            missing = [t.where for t in chunk if t.image is None]
            if missing:
                raise DataError(missing[0], "a multimodal sample needs an image")
            codes = processor.encode([load_image(t.image, t.where) for t in chunk])
        samples = [
            understanding_sample(tokenizer, config, c, t.question, t.answer) for t, c in zip(chunk, codes, strict=True)
        ]
        batches.append(pad([{"input_ids": ids, "labels": labels} for ids, labels in samples]))
    return batches
