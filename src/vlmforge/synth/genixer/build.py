"""Generator training records from labeled LLaVA/grounding records: image + instruction -> ``Question/Answer`` text.

Each labeled record becomes one record whose human turn is a drawn instruction (templates.py) and whose gpt turn is
the record's own question(s) and answer(s) as the generator should write them. Every target is parsed back with
the parser the generated data will meet, so the generator never learns a format that parse would reject.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vlmforge.data.records import OnError, Rejections, reject
from vlmforge.errors import DataError
from vlmforge.synth.genixer.parse import ParseError, parse_output
from vlmforge.synth.genixer.tasks import canonical_task, clean_question, format_target
from vlmforge.synth.genixer.templates import draw_instruction

_PIXEL_BOX = re.compile(r"\[\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*,\s*(\d+(?:\.\d+)?)\s*\]")


def labeled_pairs(record: dict[str, Any], where: str) -> list[tuple[str, str]]:
    """The record's (question, answer) turns, questions cleaned of ``<image>`` and evaluation suffixes."""
    turns = record.get("conversations")
    if not isinstance(turns, list) or len(turns) < 2 or len(turns) % 2:
        raise DataError(where, "needs 'conversations' with human/gpt turns in pairs", "bad_conversations")
    pairs = []
    for human, gpt in zip(turns[::2], turns[1::2], strict=True):
        if not isinstance(human, dict) or not isinstance(gpt, dict):
            raise DataError(where, "every turn must be an object with 'from' and 'value'", "bad_conversations")
        if human.get("from") != "human" or gpt.get("from") != "gpt":
            raise DataError(where, "turns must alternate human, gpt", "bad_conversations")
        question, answer = clean_question(str(human.get("value", ""))), str(gpt.get("value", "")).strip()
        if not question or not answer:
            raise DataError(where, "a turn has an empty question or answer", "empty_turn")
        pairs.append((question, answer))
    return pairs


def normalise_pixel_boxes(text: str, size: tuple[int, int] | None, where: str) -> str:
    """Boxes given in pixels (any value above 1) divided by the image's width and height, three decimals."""

    def repl(m: re.Match) -> str:
        values = [float(v) for v in m.groups()]
        if max(values) <= 1.0:
            return m.group(0)
        if size is None:
            raise DataError(where, f"box {m.group(0)} is in pixels but the image cannot be read", "box_in_pixels")
        w, h = size
        return "[" + ",".join(f"{v / d:.3f}" for v, d in zip(values, (w, h, w, h), strict=True)) + "]"

    return _PIXEL_BOX.sub(repl, text)


def _image_size(record: dict[str, Any], image_folder: Path | None) -> tuple[int, int] | None:
    from PIL import Image

    image = record.get("image")
    if not isinstance(image, str):
        return None
    path = Path(image) if image_folder is None else image_folder / image
    try:
        with Image.open(path) as im:
            return im.size
    except OSError:
        return None


def generator_record(
    record: dict[str, Any],
    where: str,
    *,
    seed: int = 0,
    mode: str = "specific",
    agnostic_share: float = 0.5,
    image_folder: Path | None = None,
) -> dict[str, Any] | None:
    """The generator's training record for one labeled record; None when its task is no Genixer task."""
    if "id" not in record or not isinstance(record.get("image"), str):
        raise DataError(where, "needs an 'id' and one 'image'", "bad_record")
    named = record.get("task")
    task = canonical_task(named)
    if named and task is None:
        return None
    pairs = labeled_pairs(record, where)
    if any("[" in q + a for q, a in pairs):
        size = _image_size(record, image_folder)
        pairs = [(normalise_pixel_boxes(q, size, where), normalise_pixel_boxes(a, size, where)) for q, a in pairs]
    target = format_target(pairs)
    try:
        parsed = parse_output(target, task)
    except ParseError as err:
        raise DataError(where, f"its target would not parse as {task or 'any task'} ({err})", err.reason) from err
    instruction, index, specific = draw_instruction(
        parsed.task, str(record["id"]), seed=seed, mode=mode, agnostic_share=agnostic_share
    )
    return {
        "id": str(record["id"]),
        "image": record["image"],
        "conversations": [
            {"from": "human", "value": f"<image>\n{instruction}"},
            {"from": "gpt", "value": format_target(parsed.pairs)},
        ],
        "task": parsed.task,
        "provenance": {"stage": "genixer.build", "source": where, "template": index, "task_specific": specific},
    }


def build_generator_records(
    located: list[tuple[str, dict[str, Any]]],
    *,
    on_error: OnError = "raise",
    rejections: Rejections | None = None,
    **options: Any,
) -> tuple[list[dict[str, Any]], int]:
    """``(records, skipped_other_tasks)``: generator records for every labeled record of a Genixer task."""
    out, other = [], 0
    for where, record in located:
        try:
            built = generator_record(record, where, **options)
        except DataError as err:
            reject(err, on_error, rejections)
            continue
        if built is None:
            other += 1
        else:
            out.append(built)
    return out, other
