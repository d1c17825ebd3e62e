"""Answer-matching rules that a user chooses for their own records (the ``jsonl`` task), one per sample.

* ``exact``: the answer as written; only surrounding whitespace is ignored.
* ``nocase``: the same, ignoring case.
* ``vqa``: VQA normalisation of both sides (punctuation, number words, articles, contractions). A target that the
  normalisation would empty ("A", "The") keeps its articles on both sides, and one that would still be empty ("?")
  is compared ignoring case only, so an empty answer never matches a non-empty target.
* ``letter``: the option letter that VLMEvalKit's matcher infers from the answer (records with ``choices``).
* ``iou``: the first ``[x1, y1, x2, y2]`` in the answer against the reference box(es): right at IoU >= 0.5.

``auto`` (the default) decides per group of records: ``letter`` for a record with choices, ``iou`` when every
answer is a box, ``exact`` when every answer is a single token (a word, number, symbol or letter: no space inside),
else ``vqa``. The rule is stored in each sample's ``meta["match"]``, so parse, judge and score never disagree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from vlmforge.eval import normalize as nz
from vlmforge.eval import scorers as sc
from vlmforge.eval.breakdown import split_by
from vlmforge.eval.types import proportion
from vlmforge.geometry import parse_box

RULES = ("exact", "nocase", "vqa", "letter", "iou")
_BOX_ONLY = re.compile(r"\s*[\[(][-\d.,\s]+[\])]\s*")


def as_box(answer: Any) -> list[list[float]] | None:
    """The reference box(es) of an answer: ``[x1, y1, x2, y2]``, a list of such, or a text that is only a box."""
    if isinstance(answer, str):
        box = parse_box(answer) if _BOX_ONLY.fullmatch(answer) else None
        return [box] if box else None
    if isinstance(answer, list | tuple) and answer:
        boxes = list(answer) if isinstance(answer[0], list | tuple) else [answer]
        if all(len(b) == 4 and all(isinstance(v, int | float) for v in b) for b in boxes):
            return [[float(v) for v in b] for b in boxes]
    return None


def alternatives(answer: Any) -> list[str]:
    """The acceptable answers as text: a list gives several, anything else one."""
    return [str(a) for a in answer] if isinstance(answer, list) else [str(answer)]


def auto_rule(answers: Sequence[Any]) -> str:
    """The rule for a group of records without choices, from its answers alone."""
    if answers and all(as_box(a) is not None for a in answers):
        return "iou"
    texts = [t.strip() for a in answers for t in alternatives(a)]
    return "exact" if texts and all(t and len(t.split()) == 1 for t in texts) else "vqa"


def _vqa(text: str, level: int) -> str:
    """Level 0: VQA normalisation; 1: punctuation and case only ("A." is "a", "An" is not); 2: case only."""
    if level == 0:
        return nz.vqa_normalize(text)
    if level == 1:
        return " ".join(nz.process_punctuation(text.replace("\n", " ").strip()).lower().split())
    return " ".join(text.lower().split())


def sample_meta(rule: str, answer: Any) -> dict[str, Any]:
    """What a sample's meta must hold for ``rule``: the rule, and for ``vqa`` the lightest normalisation level
    that leaves none of its answers empty."""
    if rule != "vqa":
        return {"match": rule}
    texts = [t for t in alternatives(answer) if t.strip()]
    level = next((lv for lv in (0, 1) if all(_vqa(t, lv) for t in texts)), 2)
    return {"match": rule, "vqa_level": level} if level else {"match": rule}


def parse(raw: str, meta: Mapping[str, Any]) -> Any:
    """The prediction in the form the sample's rule compares."""
    rule = meta["match"]
    if rule == "exact":
        return raw.strip()
    if rule == "nocase":
        return raw.strip().casefold()
    if rule == "vqa":
        return _vqa(raw, int(meta.get("vqa_level", 0)))
    if rule == "letter":
        return sc.parse_option(raw, meta)
    return sc.parse_rec(raw)


def judge(parsed: Any, target: Any, meta: Mapping[str, Any]) -> float:
    """1.0 when the parsed prediction matches the target (any of several acceptable answers) under the rule."""
    rule = meta["match"]
    if rule == "iou":
        return sc.judge_rec(parsed, as_box(target))
    if rule == "letter":
        return float(parsed == target)
    return float(any(parsed == parse(t, meta) for t in alternatives(target)))


def distinct_answers(rule: str, answers: Sequence[Any]) -> int:
    """How many different answers a group has once compared as ``rule`` compares them (first alternative each)."""
    return len({parse(alternatives(a)[0], sample_meta(rule, a)) for a in answers})


def match_scores(predictions: Sequence[str], targets: Sequence[Any], metas: Sequence[Mapping[str, Any]]) -> dict:
    """Accuracy under each sample's own rule, and per value of the records' ``task`` field. The rotations of a
    multiple-choice question (``meta["group"]``) count as one question, right only when every rotation is
    (circular evaluation); ``vanilla_accuracy`` then scores the original order alone."""
    correct = [judge(parse(p, m), t, m) for p, t, m in zip(predictions, targets, metas, strict=True)]
    rows: dict[Any, list[int]] = {}
    for index, meta in enumerate(metas):
        rows.setdefault(meta.get("group", index), []).append(index)
    questions = [float(all(correct[i] for i in indices)) for indices in rows.values()]
    firsts = [metas[indices[0]] for indices in rows.values()]
    out = {"accuracy": proportion(sum(questions), len(questions))}
    if any(len(indices) > 1 for indices in rows.values()):
        vanilla = [correct[i] for i in range(len(metas)) if metas[i].get("rotation", 0) == 0]
        out["vanilla_accuracy"] = proportion(sum(vanilla), len(vanilla))
    for task, indices in split_by(firsts, "task").items():
        out[f"{task}/accuracy"] = proportion(sum(questions[i] for i in indices), len(indices))
    return out
