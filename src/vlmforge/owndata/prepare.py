"""Turn a user's records into the files the own-data recipe trains and evaluates on, in ``OUT/data``.

Every record passes the training validator first (vlmforge.data.validate): a bad one stops the command naming its
file and line, or, with ``--set on_error=skip``, is left out and counted. Then:

- ``heldout.jsonl``: the user's ``--eval-data``, or a seeded share of the images with all their records
  (vlmforge.data.split), never trained on;
- ``train.jsonl``: the rest;
- ``stage1.jsonl``: one caption record per training image when the records carry captions (a ``caption`` field,
  or a record of ``task: caption`` with one question and one answer); without captions there is no such file and
  stage 1 trains the projector on the conversations instead.

The files are written the same way from the same inputs, so that a rerun finds its stages' inputs unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmforge.data.kinds import QUESTION_FIELD, kind_field, with_question_field
from vlmforge.data.records import Rejections, load_valid_records
from vlmforge.data.split import split_by_image
from vlmforge.data.validate import IMAGE_TOKEN, record_images
from vlmforge.errors import ConfigError
from vlmforge.owndata.settings import OwnDataSettings


@dataclass
class Prepared:
    train: list[dict]
    heldout: list[dict]
    captions: list[dict]
    field: str
    files: dict[str, Path]
    split: dict[str, Any]
    rejections: Rejections = field(default_factory=Rejections)

    @property
    def stage1_source(self) -> str:
        return "captions" if self.captions else "conversations"


def record_caption(record: dict) -> str | None:
    """The caption a record carries: its ``caption`` field, or the answer of a one-turn ``task: caption`` record."""
    caption = record.get("caption")
    if isinstance(caption, str) and caption.strip():
        return caption.strip()
    turns = record["conversations"]
    if record.get("task") == "caption" and len(turns) == 2:
        return turns[1]["value"].strip() or None
    return None


def caption_records(records: Sequence[dict]) -> list[dict]:
    """One stage-1 record (the image, then its caption) per distinct (image, caption), in the records' order."""
    seen, out = set(), []
    for record in records:
        caption, images = record_caption(record), record_images(record)
        if caption is None or len(images) != 1 or (images[0], caption) in seen:
            continue
        seen.add((images[0], caption))
        turns = [{"from": "human", "value": IMAGE_TOKEN}, {"from": "gpt", "value": caption}]
        out.append({"id": f"caption-{len(out)}", "image": images[0], "conversations": turns})
    return out


def _load(path: Path, folder: Path, on_error: str, rejections: Rejections) -> list[dict]:
    """Valid records, each with an ``id`` (the evaluation reports by it): its own, else its place in the file."""
    located = load_valid_records(path, folder, on_error=on_error, rejections=rejections)
    if not located:
        raise ConfigError(f"{path}: no usable records")
    return [record if record.get("id") not in (None, "") else {**record, "id": where} for where, record in located]


def _write(records: Sequence[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    tmp.replace(path)
    return path


def prepare(
    data: Path, image_folder: Path, eval_data: Path | None, settings: OwnDataSettings, on_error: str, out: Path
) -> Prepared:
    """Validate, split and write the records (see the module's docstring); ``out`` is ``OUT/data``."""
    rejections = Rejections()
    records = _load(data, image_folder, on_error, rejections)
    if eval_data is not None:
        train, heldout = records, _load(eval_data, image_folder, on_error, rejections)
        split = {
            "by": "file",
            "eval_data": str(eval_data),
            "train_records": len(train),
            "heldout_records": len(heldout),
        }
    else:
        try:
            drawn = split_by_image(records, settings.heldout_fraction, settings.split_seed, settings.heldout_max_images)
        except ValueError as err:
            raise ConfigError(f"{data}: {err}; pass held-out records with --eval-data") from err
        train, heldout = drawn.train, drawn.heldout
        split = drawn.summary(settings.split_seed, settings.heldout_fraction)
    kinds = kind_field(train, settings.group_by)
    if kinds == QUESTION_FIELD:
        train, heldout = [with_question_field(r) for r in train], [with_question_field(r) for r in heldout]
    captions = caption_records(train)
    files = {"train": _write(train, out / "train.jsonl"), "heldout": _write(heldout, out / "heldout.jsonl")}
    if captions:
        files["stage1"] = _write(captions, out / "stage1.jsonl")
    return Prepared(train, heldout, captions, kinds, files, split, rejections)
