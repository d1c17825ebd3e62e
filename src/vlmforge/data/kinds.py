"""Question kinds: which records ask the same kind of question, for per-kind scores and the readout ceiling.

A kind is the value of a record field that names it (the first of ``KIND_FIELDS`` that the records carry, or one
the user names), else the question text itself: records asking the same question are one kind.
"""

from __future__ import annotations

from collections.abc import Sequence

from vlmforge.data.validate import IMAGE_TOKEN

KIND_FIELDS = ("task", "kind", "type", "question_type")
QUESTION_FIELD = "question"  # the field that holds the question text when kinds are grouped by it


def first_question(record: dict) -> str:
    """The first human turn without its ``<image>`` marker: the question the ``jsonl`` eval task asks."""
    human = next(turn["value"] for turn in record["conversations"] if turn["from"] == "human")
    return human.replace(IMAGE_TOKEN, "").strip()


def reference_answer(record: dict) -> str:
    """The record's ``answer`` when it has one, else its first gpt reply, as the ``jsonl`` eval task scores it."""
    answer = record.get("answer")
    if answer in (None, "", []):
        answer = next(turn["value"] for turn in record["conversations"] if turn["from"] == "gpt")
    return str(answer).strip()


def kind_field(records: Sequence[dict], requested: str | None = None) -> str:
    """The field that names each record's kind: ``requested`` if given, else the first of ``KIND_FIELDS`` every
    record has, else ``QUESTION_FIELD`` (the question text, see :func:`with_question_field`)."""
    if requested:
        return requested
    for field in KIND_FIELDS:
        if records and all(isinstance(r.get(field), str | int) for r in records):
            return field
    return QUESTION_FIELD


def kind_of(record: dict, field: str) -> str | None:
    """The record's kind under ``field`` (as text), or None when it has none."""
    if field == QUESTION_FIELD and QUESTION_FIELD not in record:
        return first_question(record)
    value = record.get(field)
    return None if value is None else str(value)


def with_question_field(record: dict) -> dict:
    """The record with its first question as a field, so that an evaluation can group its scores by it."""
    return record if QUESTION_FIELD in record else {**record, QUESTION_FIELD: first_question(record)}
