"""A unified model's training data: image-to-text, text-to-image and text-only samples mixed by ratio.

- Every image is encoded to codes once, into a folder of safetensors shards (``vlmforge.models.image_codes``:
  batched, resumable); later stages, seeds and reruns with the same image tokenizer reuse it.
- Samples are built only by ``vlmforge.models.unified.prompts``, the layouts inference uses: image-to-text trains
  the answer, text-to-image the codes (caption and instruction masked), text-only every token.
- The mix is a fixed list of slots, one per sample of an epoch: each slot's source is drawn by the weights and
  takes that source's next record (each source cycles through its records in a seeded order); each
  text-to-image slot is unconditional with probability ``unconditional_rate``. The list depends only on the
  seed, so the Trainer's seeded sampler, and resuming, see the same samples.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from vlmforge.data.records import Rejections, read_records, reject
from vlmforge.errors import DataError
from vlmforge.models.image_codes import encode_dataset, read_codes
from vlmforge.models.unified.prompts import IMAGE_PLACEHOLDER, generation_sample, text_sample, understanding_sample
from vlmforge.train.recipe import DataConfig, MixConfig

SOURCES = ("understanding", "generation", "text")
Sample = dict[str, list[int]]


@dataclass(frozen=True)
class Slot:
    source: str  # understanding | generation | text
    item: int  # index into the source's samples
    unconditional: bool = False


def mix_slots(sizes: dict[str, int], mix: MixConfig, seed: int) -> list[Slot]:
    """One epoch's slots: sources drawn by ``mix``'s weights (sources without records are never drawn)."""
    weights = {s: getattr(mix, s) for s in SOURCES if sizes.get(s) and getattr(mix, s) > 0}
    if not weights:
        raise DataError("mix", "no source with records has a weight above 0", code="no_records")
    total = mix.samples or sum(sizes[s] for s in weights)
    rng = random.Random(seed)
    kinds = rng.choices(list(weights), weights=list(weights.values()), k=total)
    orders: dict[str, list[int]] = {s: [] for s in weights}
    slots = []
    for kind in kinds:
        if not orders[kind]:  # a new pass over this source's records, in a new order
            orders[kind] = rng.sample(range(sizes[kind]), sizes[kind])
        uncond = kind == "generation" and rng.random() < mix.unconditional_rate
        slots.append(Slot(kind, orders[kind].pop(), uncond))
    return slots


class MixedDataset(Dataset):
    """The slots of :func:`mix_slots` over prepared samples (per source, by record index); a text-to-image item
    holds both of its forms. ``records``: how many records each source holds."""

    def __init__(self, samples: dict[str, dict[int, Any]], slots: list[Slot], records: dict[str, int]):
        self.samples, self.slots, self.records = samples, slots, records

    def __len__(self) -> int:
        return len(self.slots)

    def __getitem__(self, index: int) -> Sample:
        slot = self.slots[index]
        sample = self.samples[slot.source][slot.item]
        return sample[slot.unconditional] if slot.source == "generation" else sample

    def lengths(self) -> list[int]:
        return [len(self[i]["input_ids"]) for i in range(len(self))]


def _question_answer(where: str, record: dict) -> tuple[str, str]:
    turns = record.get("conversations") or []
    if len(turns) != 2 or not record.get("image"):
        raise DataError(where, "an image-to-text record needs an image and one question and one answer", "bad_record")
    question = str(turns[0].get("value", "")).replace(IMAGE_PLACEHOLDER, "").strip()
    return question, str(turns[1].get("value", ""))


def _caption(where: str, record: dict) -> str:
    turns = record.get("conversations") or []
    caption = record.get("caption") or (turns[-1].get("value") if turns else None)
    if not record.get("image") or not caption:
        raise DataError(where, "a text-to-image record needs an image and a caption", "bad_record")
    return str(caption)


def _text(where: str, record: dict) -> str:
    if not isinstance(record.get("text"), str) or not record["text"]:
        raise DataError(where, "a text-only record needs a non-empty 'text' field", "bad_record")
    return record["text"]


PARSERS = {"understanding": _question_answer, "generation": _caption, "text": _text}


def _records(data: DataConfig, on_error: str, rejections: Rejections) -> dict[str, list[tuple[str, dict, Any]]]:
    """Each drawn source's records as ``(where, record, parsed)``; bad ones raised or counted."""
    paths = {"understanding": data.path, "generation": data.generation_path, "text": data.text_only_path}
    found: dict[str, list[tuple[str, dict, Any]]] = {}
    for source, path in paths.items():
        if not path or getattr(data.mix, source) <= 0:
            continue
        kept = []
        for where, record in read_records(path, on_error=on_error, rejections=rejections):
            try:
                kept.append((where, record, PARSERS[source](where, record)))
            except DataError as err:
                reject(err, on_error, rejections)
        found[source] = kept
    return found


def encode_images(found: dict[str, list], data: DataConfig, processor, codes_dir: Path) -> dict[str, list[int]]:
    """Codes of every image the records name, keyed by the record's image path; only new images are encoded."""
    folders = {"understanding": data.path, "generation": data.generation_path}
    items: dict[str, Path] = {}
    for source in ("understanding", "generation"):
        base = Path(data.image_folder) if data.image_folder else Path(folders[source] or ".").parent
        for _, record, _ in found.get(source, []):
            items.setdefault(record["image"], base / record["image"])
    if not items:
        return {}
    tokenizer = processor.image_tokenizer()
    name = str(processor.image_tokenizer_dir.resolve())
    encode_dataset(tokenizer, list(items.items()), codes_dir, name=name)
    ids, codes = read_codes(codes_dir)
    return {key: row.tolist() for key, row in zip(ids, codes, strict=True) if key in items}


def _sample(source: str, parsed: Any, codes: list[int] | None, tokenizer, config) -> Any:
    if source == "understanding":
        return _as_sample(understanding_sample(tokenizer, config, codes, *parsed))
    if source == "generation":  # (conditional, unconditional): the slot picks one
        return (
            _as_sample(generation_sample(tokenizer, config, codes, parsed)),
            _as_sample(generation_sample(tokenizer, config, codes, None)),
        )
    return _as_sample(text_sample(tokenizer, parsed))


def _as_sample(pair: tuple[list[int], list[int]]) -> Sample:
    return {"input_ids": pair[0], "labels": pair[1]}


def _length(sample: Any) -> int:
    forms = sample if isinstance(sample, tuple) else (sample,)
    return max(len(form["input_ids"]) for form in forms)


def build_mix(
    data: DataConfig,
    processor,
    model_config,
    max_length: int,
    codes_dir: Path,
    seed: int,
    on_error: str = "raise",
    rejections: Rejections | None = None,
) -> MixedDataset:
    """The stage's mixed dataset. Every record is read and checked for its fields; only the records the epoch's
    slots draw are encoded (images to codes, text to ids), so a large source costs what the mix takes from it.
    A drawn record too long for ``max_length`` is raised or, skipped, leaves its slots out."""
    rejections = rejections if rejections is not None else Rejections()
    found = _records(data, on_error, rejections)
    slots = mix_slots({source: len(records) for source, records in found.items()}, data.mix, seed)
    used = {source: sorted({s.item for s in slots if s.source == source}) for source in found}
    drawn = {source: [found[source][i] for i in items] for source, items in used.items()}
    codes = encode_images(drawn, data, processor, codes_dir)
    samples: dict[str, dict[int, Any]] = {}
    for source, items in used.items():
        samples[source] = {}
        for item in items:
            where, record, parsed = found[source][item]
            sample = _sample(source, parsed, codes.get(record.get("image", "")), processor.tokenizer, model_config)
            if _length(sample) > max_length:
                reason = f"{_length(sample)} tokens, over max_length={max_length}"
                reject(DataError(where, reason, "too_long"), on_error, rejections)
                continue
            samples[source][item] = sample
    records = {source: len(records) for source, records in found.items()}
    return MixedDataset(samples, [s for s in slots if s.item in samples[s.source]], records)
