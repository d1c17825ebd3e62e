"""The nine Genixer tasks and the generator's target text: ``Question: ... Answer: ...``, repeated for dialogue.

Boxes in targets are ``[x1,y1,x2,y2]`` normalised by the image's width and height, three decimals, no spaces;
several boxes are joined by ``;``. Multiple-choice questions list their options on lines of their own.
"""

from __future__ import annotations

from collections.abc import Sequence

GENERIC_TASKS = ("common_vqa", "adversarial_vqa", "mc_vqa", "dialogue")
GROUNDING_TASKS = ("rec", "reg", "pointqa", "qcba", "ref_dialogue")
TASKS = GENERIC_TASKS + GROUNDING_TASKS
MULTI_TURN = ("dialogue", "ref_dialogue")

# Task names other datasets use for the same thing (the shapes world's among them); "caption" has no Genixer task.
TASK_ALIASES: dict[str, str] = {
    "vqa": "common_vqa",
    "open_qa": "common_vqa",
    "color": "common_vqa",
    "shape": "common_vqa",
    "count": "common_vqa",
    "position": "common_vqa",
    "exist": "adversarial_vqa",
    "pope": "adversarial_vqa",
    "yes_no": "adversarial_vqa",
    "mc": "mc_vqa",
    "multiple_choice": "mc_vqa",
    "multi": "dialogue",
    "conversation": "dialogue",
    "ref_dialog": "ref_dialogue",
    "point_qa": "pointqa",
}

# Answer-format lines that evaluation prompts append; a generator should learn the question, not the eval wording.
EVAL_SUFFIXES = (
    "Answer the question using a single word or phrase.",
    "Answer with the option's letter from the given choices directly.",
    "Please answer this question with Yes or No.",
)


def canonical_task(name: str | None) -> str | None:
    """The Genixer task a record's ``task`` field names, or None when it names none."""
    if not name:
        return None
    name = str(name).strip().lower()
    return name if name in TASKS else TASK_ALIASES.get(name)


def clean_question(text: str) -> str:
    """A human turn as a generator target: no ``<image>`` token, no evaluation answer-format line."""
    text = text.replace("<image>", "").strip()
    for suffix in EVAL_SUFFIXES:
        text = text.replace(suffix, "")
    return "\n".join(line.rstrip() for line in text.strip().splitlines() if line.strip())


def format_target(pairs: Sequence[tuple[str, str]]) -> str:
    """``Question: q Answer: a`` per pair, one pair per line."""
    return "\n".join(f"Question: {q.strip()} Answer: {a.strip()}" for q, a in pairs)
