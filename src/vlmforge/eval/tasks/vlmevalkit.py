"""VLMEvalKit TSV benchmarks: columns index, question, [hint], A..J, answer, [category], image (base64).

VLMEvalKit stores each image once: a later row whose ``image`` is a short string naming another row's ``index``
reuses that row's image. MMMU rows may hold a JSON list of base64 images. Pass ``--data <task>=FILE.tsv``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlmforge.errors import DataError
from vlmforge.eval import scorers as sc
from vlmforge.eval.tasks import register
from vlmforge.eval.tasks.common import SHORT_ANSWER, data_path, mc_samples, read_tsv, require
from vlmforge.eval.types import Sample, Task, decode_base64_image
from vlmforge.geometry import LETTERS

_MISSING = ("", "nan", "NaN", "None")


def _present(value: str | None) -> bool:
    return value is not None and value.strip() not in _MISSING


def _rows(path: Path) -> list[tuple[str, dict[str, str]]]:
    rows = list(read_tsv(path))
    for where, row in rows:
        require(row, ("index", "question"), where)
    return rows


def _images(row: Mapping[str, str], by_index: Mapping[str, str], where: str) -> tuple[list[bytes], str]:
    """(decoded images, key naming the image) resolving VLMEvalKit's by-index image references."""
    raw = row.get("image", "")
    key = row["index"]
    if _present(raw) and len(raw) <= 64 and raw.strip() in by_index:  # a reference to another row's image
        key = raw.strip()
        raw = by_index[key]
    if not _present(raw):
        if _present(row.get("image_path")):
            raise DataError(where, "row has only an image_path; VLMEvalKit TSVs need the base64 image column",
                            "missing_image")  # fmt: skip
        raise DataError(where, "row has no image", "missing_image")
    if raw.lstrip().startswith("["):
        try:
            items = json.loads(raw)
        except json.JSONDecodeError as err:
            raise DataError(where, f"image list is not valid JSON: {err.msg}", "bad_image") from err
    else:
        items = [raw]
    name = row.get("image_path") if _present(row.get("image_path")) else key
    return [decode_base64_image(item, where) for item in items], str(name)


def _index(rows) -> dict[str, str]:
    return {row["index"]: row.get("image", "") for _, row in rows if len(row.get("image", "")) > 64}


def load_tsv(kind: str, data: Mapping[str, str]) -> list[Sample]:
    key = f"{kind}_tsv"
    path = data_path(data, key, key)
    rows = _rows(path)
    by_index = _index(rows)
    out: list[Sample] = []
    for where, row in rows:
        images, image_key = _images(row, by_index, where)
        question = row["question"].strip()
        meta: dict[str, Any] = {"type": row.get("category") or None}
        texts = [row[c] for c in LETTERS if _present(row.get(c))]
        if kind in ("mme", "pope"):
            require(row, ("answer",), where)
            if kind == "mme":
                meta = {"subtask": row.get("category") or "unknown", "image": image_key}
            else:
                meta = {"split": row.get("category") or row.get("split") or ""}
            prompt = question if SHORT_ANSWER in question else f"{question}\n{SHORT_ANSWER}"
            out.append(Sample(id=row["index"], prompt=prompt, target=row["answer"].strip().lower(),
                              images=images, where=where, meta=meta))  # fmt: skip
        elif texts:
            require(row, ("answer",), where)
            answer = row["answer"].strip()
            if answer not in LETTERS[: len(texts)]:
                raise DataError(where, f"answer {answer!r} is not one of the option letters")
            hint = row.get("hint") if _present(row.get("hint")) else None
            if kind == "scienceqa" and hint:
                hint = f"Context: {hint}"
            out.extend(mc_samples(row["index"], question, texts, LETTERS.index(answer), images=images,
                                  circular=kind == "mmbench", where=where, meta=meta, hint=hint))  # fmt: skip
        else:  # open question (MMMU has some): normalised match
            require(row, ("answer",), where)
            out.append(Sample(id=row["index"], prompt=f"{question}\n{SHORT_ANSWER}", target=row["answer"],
                              images=images, where=where, meta=meta))  # fmt: skip
    return out


_SPECS = {
    "mmbench": ("MMBench (VLMEvalKit TSV): option letter, circular evaluation.", sc.parse_option,
                sc.judge_equal, sc.multiple_choice_scores, "accuracy"),
    "seed": ("SEED-Bench (VLMEvalKit TSV): option letter.", sc.parse_option, sc.judge_equal,
             sc.multiple_choice_scores, "accuracy"),
    "scienceqa": ("ScienceQA (VLMEvalKit TSV): option letter, LLaVA's parsing.", sc.parse_scienceqa,
                  sc.judge_equal, sc.scienceqa_scores, "accuracy"),
    "mmmu": ("MMMU (VLMEvalKit TSV): option letter, or normalised match for open questions.",
             sc.parse_generic, sc.judge_generic, sc.generic_scores, "accuracy"),
    "mme": ("MME (VLMEvalKit TSV): acc + acc+ per category.", sc.parse_mme, sc.judge_yes_no, sc.mme_scores,
            "perception"),
    "pope": ("POPE (VLMEvalKit TSV): POPE metrics per category (split).", sc.parse_pope, sc.judge_yes_no,
             sc.pope_scores, "f1"),
}  # fmt: skip

for _kind, (_desc, _parse, _judge, _score, _primary) in _SPECS.items():
    register(Task(name=f"{_kind}_tsv", description=_desc, data_keys=(f"{_kind}_tsv",),
                  load=functools.partial(load_tsv, _kind), parse=_parse, judge=_judge, score=_score,
                  primary=_primary, max_new_tokens=16))  # fmt: skip
