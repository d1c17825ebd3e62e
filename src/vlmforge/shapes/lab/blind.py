"""The question-only ("blind") baseline: what a model scores on the lab's test questions without the image.

Chance alone misleads on this data: "How many triangles are there?" is answered "1" most of the time, so a model
that ignores the image scores 0.64 on count against a uniform chance of 0.25. The standard VQA control is a
question-only baseline; here it is exact and cheap: for each test question, answer with the most frequent
training answer to the identical question text (falling back to the most frequent answer of its type), and score
with exact match. Only the exact-match question types get one; multiple choice (scored circularly) and boxes
(scored by IoU) have none.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from vlmforge.shapes.foundation.corpus import EXACT_MATCH_TASKS, iter_questions, to_messages


def _questions(world_dir: Path, split: str) -> list[tuple[str, str, str]]:
    """(question type, question text without the image placeholder, answer) of each exact-match question."""
    return [
        (record["task"], to_messages(record, where)[0]["content"], record["answer"].strip().lower())
        for where, record in iter_questions(world_dir, split)
    ]


def question_only_baseline(
    world_dir: str | Path, train_split: str = "train", test_split: str = "test"
) -> dict[str, float]:
    """Accuracy per question type of the most-frequent-answer-per-question predictor, fitted on ``train_split``'s
    ``instruct.jsonl`` and scored on ``test_split``'s."""
    root = Path(world_dir)
    by_question: dict[str, Counter] = defaultdict(Counter)
    by_type: dict[str, Counter] = defaultdict(Counter)
    for task, question, answer in _questions(root, train_split):
        by_question[question][answer] += 1
        by_type[task][answer] += 1
    hits, totals = Counter(), Counter()
    for task, question, answer in _questions(root, test_split):
        votes = by_question.get(question) or by_type.get(task)
        guess = votes.most_common(1)[0][0] if votes else ""
        hits[task] += guess == answer
        totals[task] += 1
    return {task: hits[task] / totals[task] for task in EXACT_MATCH_TASKS if totals[task]}
