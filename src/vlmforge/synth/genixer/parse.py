"""Parse the generator's text into question/answer pairs, check them against their task, and say why not.

Every rejection raises :class:`ParseError` with one reason code, so a stage can count outputs by reason and never
drop one silently. Boxes are accepted with or without spaces, in brackets, several joined by ``;``; they come back
in the canonical three-decimal form, and every box of a sample is listed in order in ``boxes``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vlmforge.synth.genixer.tasks import MULTI_TURN, TASKS

REASONS = (
    "empty",
    "no_question",
    "no_answer",
    "bad_box",
    "box_out_of_range",
    "degenerate_box",
    "options_missing",
    "answer_not_an_option",
    "not_yes_no",
    "no_box",
    "box_in_answer",
    "too_few_candidates",
    "answer_not_a_candidate",
    "too_few_turns",
    "too_many_turns",
    "unknown_task",
)

# Markdown emphasis around a marker ("**Question:**") belongs to the marker, not to the text after it.
_MARKER = re.compile(r"\**\b(question|answer)\s*:\**", re.IGNORECASE)
_BRACKET = re.compile(r"\[([^\[\]]*)\]")
_NUMBER = r"\s*(-?\d+(?:\.\d+)?|-?\.\d+)\s*"
_BOX_BODY = re.compile(",".join([_NUMBER] * 4))
_OPTION = re.compile(r"^\s*\(?([A-J])[.):]\s+\S", re.MULTILINE)  # "A. x", "A) x", "(A) x", "A: x"
_YES_NO = re.compile(r"\b(yes|no)\b[\s.!]*$", re.IGNORECASE)


class ParseError(ValueError):
    def __init__(self, reason: str, detail: str = ""):
        assert reason in REASONS, reason
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass
class Parsed:
    task: str
    pairs: list[tuple[str, str]]
    boxes: list[list[float]] = field(default_factory=list)


def format_box(box: list[float]) -> str:
    return "[" + ",".join(f"{v:.3f}" for v in box) + "]"


def _box(body: str) -> list[float]:
    m = _BOX_BODY.fullmatch(body.strip())
    if not m:
        raise ParseError("bad_box", f"[{body}] is not four numbers")
    box = [float(v) for v in m.groups()]
    if any(v < 0.0 or v > 1.0 for v in box):
        raise ParseError("box_out_of_range", f"[{body}] is outside [0, 1]")
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ParseError("degenerate_box", f"[{body}] has x2 <= x1 or y2 <= y1")
    return box


def canonical_boxes(text: str) -> tuple[str, list[list[float]]]:
    """``text`` with every box rewritten canonically, and the boxes. A bracket holding digits must be a box."""
    boxes: list[list[float]] = []

    def repl(m: re.Match) -> str:
        if not re.search(r"\d", m.group(1)):
            return m.group(0)  # "[sic]" and the like are text, not boxes
        box = _box(m.group(1))
        boxes.append(box)
        return format_box(box)

    out = _BRACKET.sub(repl, text)
    out = re.sub(r"\]\s*;\s*\[", "];[", out)
    return out, boxes


def split_pairs(text: str) -> list[tuple[str, str]]:
    """``Question: ... Answer: ...`` pairs in order; text before the first marker (a preamble) is ignored."""
    if not text or not text.strip():
        raise ParseError("empty")
    marks = list(_MARKER.finditer(text))
    if not any(m.group(1).lower() == "question" for m in marks):
        raise ParseError("no_question", "no 'Question:'")
    pairs, expect, question = [], "question", ""
    for i, m in enumerate(marks):
        kind = m.group(1).lower()
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        body = text[m.end() : end].strip()
        if kind != expect:
            raise ParseError("no_answer" if kind == "question" else "no_question", f"two '{kind.title()}:' in a row")
        if not body:
            raise ParseError(f"no_{kind}", f"empty {kind}")
        if kind == "question":
            question, expect = body, "answer"
        else:
            pairs.append((question, body))
            expect = "question"
    if expect == "answer":
        raise ParseError("no_answer", "the last question has no answer")
    return pairs


def _options(question: str) -> list[str]:
    return [m.group(1) for m in _OPTION.finditer(question)]


def infer_task(pairs: list[tuple[str, str]], boxes_q: list[int], boxes_a: list[int]) -> str:
    """The task a task-agnostic output chose, from its shape: turns, options, where boxes are, yes/no."""
    boxed = sum(boxes_q) + sum(boxes_a) > 0
    if len(pairs) > 1:
        return "ref_dialogue" if boxed else "dialogue"
    (q, a), nq, na = pairs[0], boxes_q[0], boxes_a[0]
    if len(_options(q)) >= 2:
        return "mc_vqa"
    if nq >= 2 and na >= 1:
        return "pointqa"
    if na >= 1 and nq == 0:
        return "qcba" if _YES_NO.search(a) else "rec"
    if nq >= 1:
        return "reg"
    return "adversarial_vqa" if _YES_NO.match(a.strip()) and len(a.split()) <= 2 else "common_vqa"


def _check(task: str, pairs: list[tuple[str, str]], boxes_q: list[list], boxes_a: list[list]) -> None:
    if task in MULTI_TURN:
        if len(pairs) < 2:
            raise ParseError("too_few_turns", f"{task} needs at least two pairs")
        if task == "ref_dialogue" and not any(boxes_q) and not any(boxes_a):
            raise ParseError("no_box", "a referential dialogue cites at least one box")
        return
    if len(pairs) > 1:
        raise ParseError("too_many_turns", f"{task} is one question and its answer")
    (q, a), bq, ba = pairs[0], boxes_q[0], boxes_a[0]
    if task == "adversarial_vqa" and not re.match(r"(yes|no)\b", a.strip(), re.IGNORECASE):
        raise ParseError("not_yes_no", f"answer {a[:40]!r}")
    if task == "mc_vqa":
        letters = _options(q)
        if len(letters) < 2:
            raise ParseError("options_missing", "fewer than two 'A. ...' option lines")
        m = re.match(r"\(?([A-J])\b", a.strip())
        if not m or m.group(1) not in letters:
            raise ParseError("answer_not_an_option", f"answer {a[:40]!r} is not one of {''.join(letters)}")
    if task == "rec" and not ba:
        raise ParseError("no_box", "REC answers with a box")
    if task == "reg":
        if not bq:
            raise ParseError("no_box", "REG asks about a box")
        if ba:
            raise ParseError("box_in_answer", "REG answers with words")
    if task == "pointqa":
        if len(bq) < 2:
            raise ParseError("too_few_candidates", "PointQA lists at least two candidate boxes")
        if len(ba) != 1:
            raise ParseError("no_box", "PointQA answers with one box")
        if ba[0] not in bq:
            raise ParseError("answer_not_a_candidate", "the answer's box is none of the candidates")
    if task == "qcba":
        if not ba:
            raise ParseError("no_box", "the reasoning chain cites boxes")
        if not _YES_NO.search(a):
            raise ParseError("not_yes_no", "the chain ends with Yes or No")


def parse_output(text: str, task: str | None = None) -> Parsed:
    """Parse one generated text. ``task``: the task it was asked for; None (task-agnostic) infers it."""
    if task is not None and task not in TASKS:
        raise ParseError("unknown_task", repr(task))
    raw_pairs = split_pairs(text)
    pairs, boxes, boxes_q, boxes_a = [], [], [], []
    for q, a in raw_pairs:
        q, bq = canonical_boxes(q)
        a, ba = canonical_boxes(a)
        pairs.append((q, a))
        boxes_q.append(bq)
        boxes_a.append(ba)
        boxes += bq + ba
    if task is None:
        task = infer_task(pairs, [len(b) for b in boxes_q], [len(b) for b in boxes_a])
    _check(task, pairs, boxes_q, boxes_a)
    return Parsed(task, pairs, boxes)


def sample_record(source: dict, parsed: Parsed, provenance: dict) -> dict:
    """A parsed output as a training record: one human/gpt turn per pair, ``<image>`` in the first."""
    turns = []
    for k, (q, a) in enumerate(parsed.pairs):
        turns += [{"from": "human", "value": f"<image>\n{q}" if k == 0 else q}, {"from": "gpt", "value": a}]
    record = {"id": source["id"], "image": source["image"], "conversations": turns, "task": parsed.task}
    if parsed.boxes:
        record["boxes"] = parsed.boxes
    return {**record, "provenance": provenance}
