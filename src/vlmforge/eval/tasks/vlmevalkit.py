"""VLMEvalKit TSV benchmarks: columns index, question, [hint], A..Z, answer, [category], [l2-category], [split],
image (base64), scored as VLMEvalKit scores them with its ``exact_matching`` policy (see docs/evaluation.md).

VLMEvalKit stores each image once: a later row whose ``image`` is a short string naming another row's ``index``
reuses that row's image. MMMU rows may hold a JSON list of base64 images. An MMBench TSV holds the circular copies
of its questions (the options rotated) as rows of their own, whose index is the question's plus a multiple of
1,000,000 (or named by a ``g_index`` column); a question counts when all its rows are right. Pass
``--data <task>=FILE.tsv``.
"""

from __future__ import annotations

import functools
import json
import string
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlmforge.errors import DataError
from vlmforge.eval import scorers as sc
from vlmforge.eval import yesno as yn
from vlmforge.eval.tasks import register
from vlmforge.eval.tasks.common import SHORT_ANSWER, data_path, mc_prompt, read_tsv, require
from vlmforge.eval.types import Sample, Scoring, Task, decode_base64_image

# The cells pandas reads as missing (VLMEvalKit loads TSVs with pandas): an option holding one of these is absent.
_MISSING = frozenset({
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA",
    "NULL", "NaN", "None", "n/a", "nan", "null",
})  # fmt: skip
CIRCULAR_OFFSET = 1_000_000
_LETTERS = tuple(string.ascii_uppercase)
# VLMEvalKit's MMMU turns an open question into a two-option one whose first option is the answer.
MMMU_OTHER = "Other Answers"


def _present(value: str | None) -> bool:
    return value is not None and value not in _MISSING


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


def _integer(value: str, column: str, where: str) -> int:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number.is_integer():
        raise DataError(where, f"{column} {value!r} is not an integer: circular evaluation groups rows by index")
    return int(number)


def _options(row: Mapping[str, str]) -> dict[str, str]:
    return {letter: row[letter] for letter in _LETTERS if _present(row.get(letter))}


def circular_groups(rows: list[tuple[str, dict[str, str]]]) -> dict[str, tuple[str, int]]:
    """index -> (question, rotation) as VLMEvalKit groups an MMBench TSV: by the ``g_index`` column, else by
    ``index % 1,000,000``; rotation 0 is the question's own row. A copy without its question, or a question
    with some but not all of its rotations (one row per option), is a DataError naming the index."""
    has_column = any(_present(row.get("g_index")) for _, row in rows)
    members: dict[int, list[tuple[int, str, str]]] = defaultdict(list)
    questions: dict[int, tuple[str, int]] = {}
    for where, row in rows:
        index = _integer(row["index"], "index", where)
        group = _integer(row["g_index"], "g_index", where) if has_column else index % CIRCULAR_OFFSET
        members[group].append((index, where, row["index"]))
        if index == group:
            questions[group] = (where, len(_options(row)))
    out: dict[str, tuple[str, int]] = {}
    for group, rows_of in members.items():
        if group not in questions:
            index, where, _ = rows_of[0]
            raise DataError(where, f"row index {index} is a circular copy of question index {group}, which the file "
                            "does not hold", "incomplete_circular")  # fmt: skip
        where, n_options = questions[group]
        indices = sorted(index for index, _, _ in rows_of)
        if len(indices) > 1 and len(indices) != n_options:
            expected = {group + k * CIRCULAR_OFFSET for k in range(n_options)}
            missing = "" if has_column else f"; missing index {', '.join(map(str, sorted(expected - set(indices))))}"
            raise DataError(where, f"question index {group} has {len(indices)} of its {n_options} circular rows "
                            f"(one per option){missing}", "incomplete_circular")  # fmt: skip
        for rotation, (_, _, name) in enumerate(sorted(rows_of)):
            out[name] = (str(group), rotation)
    return out


def _yes_no_sample(kind: str, row: Mapping[str, str], images: list[bytes], image_key: str, where: str) -> Sample:
    """MME / POPE: the answer as written ("Yes"/"No", compared exactly); MME pairs questions by image, POPE
    counts a row once per category it lists (comma-separated)."""
    require(row, ("answer",), where)
    category = row.get("category")
    if kind == "mme":
        meta: dict[str, Any] = {"subtask": category or "unknown", "image": image_key}
    else:
        meta = {"splits": category.split(",") if _present(category) else []}
    question = row["question"].strip()
    prompt = question if SHORT_ANSWER in question else f"{question}\n{SHORT_ANSWER}"
    return Sample(id=row["index"], prompt=prompt, target=row["answer"], images=images, where=where, meta=meta)


def _choice_sample(kind: str, row: Mapping[str, str], images: list[bytes], where: str,
                   circular: tuple[str, int] | None) -> Sample:  # fmt: skip
    """A multiple-choice row, its options keeping the letters of the file. MMMU's open questions become VLMEvalKit's
    two options (the answer, "Other Answers") with A right."""
    require(row, ("answer",), where)
    question, answer = row["question"].strip(), row["answer"].strip()
    choices = _options(row)
    meta: dict[str, Any] = {"type": row.get("category") or None}
    meta.update({key: row[key] for key in ("l2-category", "split") if _present(row.get(key))})
    if kind == "mmmu" and "A" not in choices:
        prompt, choices, answer = f"{question}\n{SHORT_ANSWER}", {"A": answer, "B": MMMU_OTHER}, "A"
    else:
        if kind == "mmmu" and answer not in _LETTERS:
            answer = "A"  # VLMEvalKit's rule for MMMU answers that are not one letter
        elif answer not in choices:
            raise DataError(where, f"answer {answer!r} is not one of the option letters {''.join(choices)}")
        hint = row.get("hint") if _present(row.get("hint")) else None
        prompt = mc_prompt(question, choices, f"Context: {hint}" if kind == "scienceqa" and hint else hint)
    group, rotation = circular or (row["index"], 0)
    meta.update({"choices": choices, "group": group, "rotation": rotation})
    return Sample(id=row["index"], prompt=prompt, target=answer, images=images, where=where, meta=meta, group=group)


def load_tsv(kind: str, data: Mapping[str, str]) -> list[Sample]:
    key = f"{kind}_tsv"
    path = data_path(data, key, key)
    rows = _rows(path)
    by_index = _index(rows)
    circular = circular_groups(rows) if kind == "mmbench" else {}
    out: list[Sample] = []
    for where, row in rows:
        images, image_key = _images(row, by_index, where)
        if kind in ("mme", "pope"):
            out.append(_yes_no_sample(kind, row, images, image_key, where))
        else:
            out.append(_choice_sample(kind, row, images, where, circular.get(row["index"])))
    return out


_SPECS: dict[str, tuple[str, Scoring, Scoring, str]] = {
    "mmbench": ("MMBench (VLMEvalKit TSV): option letter, circular over the copies the file holds.", sc.OPTION,
                sc.OPTION_ROBUST, "accuracy"),
    "seed": ("SEED-Bench (VLMEvalKit TSV): option letter.", sc.OPTION, sc.OPTION_ROBUST, "accuracy"),
    "scienceqa": ("ScienceQA (VLMEvalKit TSV): option letter.", sc.OPTION, sc.OPTION_ROBUST, "accuracy"),
    "mmmu": ("MMMU (VLMEvalKit TSV): option letter; an open question is matched against its answer.", sc.OPTION,
             sc.OPTION_ROBUST, "accuracy"),
    "mme": ("MME (VLMEvalKit TSV): yes/no, acc + acc+ per category.", yn.MME_VLMEVALKIT, yn.MME_VLMEVALKIT_ROBUST,
            "perception"),
    "pope": ("POPE (VLMEvalKit TSV): F1, precision, recall, accuracy overall and per category.",
             yn.POPE_VLMEVALKIT, yn.POPE_VLMEVALKIT_ROBUST, "f1"),
}  # fmt: skip

for _kind, (_desc, _ref, _robust, _primary) in _SPECS.items():
    register(Task(name=f"{_kind}_tsv", description=_desc, data_keys=(f"{_kind}_tsv",),
                  load=functools.partial(load_tsv, _kind), parse=_ref.parse, judge=_ref.judge, score=_ref.score,
                  robust=_robust, primary=_primary, max_new_tokens=16))  # fmt: skip
