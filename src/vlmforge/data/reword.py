"""Templated rewordings of training questions (a stage's ``data.reword_questions``).

A dataset that asks each kind of question in one fixed phrasing teaches the model to key its answer on the exact
words, so a question asked another way gets an answer of the wrong kind. Rewording a share of the training
questions with generic English templates (a wrapper around the question, a restructured question, a synonym)
makes the model read what is asked instead. The templates know nothing of a dataset: they apply to any question.

Each record's wording is drawn once from the seed and the record's id, so a stage sees the same samples in every
epoch and on resume, and the lengths its batching plan was made from stay true.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Sequence

from vlmforge.data.validate import IMAGE_TOKEN

# (pattern on the whole question, rewritten forms); \1, \2 are the pattern's groups.
_RESTRUCTURE: tuple[tuple[str, tuple[str, ...]], ...] = (
    (r"What (\w+) is (the .+)\?", (r"Tell me the \1 of \2.", r"Which \1 is \2?", r"Name the \1 of \2.")),
    (r"What is (the .+)\?", (r"Tell me what \1 is.", r"Name \1.", r"Say what \1 is.")),
    (r"Which (\w+) is (.+)\?", (r"Tell me which \1 is \2.", r"Name the \1 that is \2.", r"What \1 is \2?")),
    (r"Where is (the .+)\?", (r"Tell me where \1 is.", r"Say where \1 is.", r"In which place is \1?")),
    (r"How many (.+) are there\?", (r"Count the \1.", r"Tell me how many \1 there are.", r"What is the number of \1?")),
    (r"How many (.+)\?", (r"Tell me how many \1.", r"Say how many \1.")),
    (r"What (.+) (\w+)\?", (r"Tell me what \1 \2.", r"Say what \1 \2.")),
)
_WRAPPERS = (
    "Look at the image. {q}",
    "{q} Answer in one word.",
    "Please answer: {q}",
    "Question: {q}",
    "About this picture: {q}",
    "Here is a question about the image. {q}",
    "{q} Give a short answer.",
)
_SYNONYMS = (
    ("colour", "color"),
    ("image", "picture"),
    ("picture", "photo"),
    ("large", "big"),
    ("big", "large"),
    ("small", "little"),
    ("shown", "visible"),
    ("drawn", "shown"),
)


def _restructure(question: str, rng: random.Random) -> str:
    for pattern, forms in _RESTRUCTURE:
        match = re.fullmatch(pattern, question)
        if match:
            return match.expand(rng.choice(forms))
    return question


def _synonym(question: str, rng: random.Random) -> str:
    present = [(a, b) for a, b in _SYNONYMS if re.search(rf"\b{a}\b", question)]
    if not present:
        return question
    a, b = rng.choice(present)
    return re.sub(rf"\b{a}\b", b, question)


def _wrap(question: str, rng: random.Random) -> str:
    return rng.choice(_WRAPPERS).format(q=question)


_WAYS: tuple[Callable[[str, random.Random], str], ...] = (_restructure, _synonym, _wrap)


def reword_question(question: str, rng: random.Random) -> str:
    """One templated rewording of ``question`` (one to three of: restructure, synonym, wrapper)."""
    text = question.strip()
    ways = [way for way in _WAYS if rng.random() < 0.6] or [rng.choice(_WAYS)]
    for way in ways:
        text = way(text, rng)
    return text


def _record_rng(seed: int, record_id: object) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{record_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def reword_record(record: dict, seed: int, share: float = 0.5) -> dict:
    """The record with, for a ``share`` of records (drawn from ``seed`` and its id), each human turn's question
    reworded; ``<image>`` markers and every answer stay as they are."""
    rng = _record_rng(seed, record.get("id"))
    if rng.random() >= share:
        return record
    turns = []
    for turn in record["conversations"]:
        if turn["from"] == "human":
            value = turn["value"]
            question = value.replace(IMAGE_TOKEN, "").strip()
            turn = {**turn, "value": f"{IMAGE_TOKEN}\n" * value.count(IMAGE_TOKEN) + reword_question(question, rng)}
        turns.append(turn)
    return {**record, "conversations": turns}


def reword_items(items: Sequence[tuple[str, dict]], seed: int, share: float = 0.5) -> list[tuple[str, dict]]:
    """``(where, record)`` pairs as a ConversationDataset holds them, a ``share`` of them reworded."""
    return [(where, reword_record(record, seed, share)) for where, record in items]
