"""The exact truth of a generated sample: the world knows every scene, so every question it can pose has one answer.

For one scene, every well-posed question of every world task is listed with its answer (the world's own question
generators, ``questions.py`` and ``grounding.py``), keyed by its normalised text. A generated pair is *correct*
when its question is one of them and its answer matches: text exactly (after normalising case and spaces), boxes
at IoU >= 0.5 (as REC is scored). A question the scene does not support (an absent object, an ambiguous reference,
a box over no object) is *not* correct. A multi-turn sample is correct when every turn is.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vlmforge.geometry import iou
from vlmforge.shapes.world.config import WorldConfig
from vlmforge.shapes.world.describe import ATTRIBUTE_ORDER, phrase, unique_reference
from vlmforge.shapes.world.grounding import GROUNDING, REFERENCES
from vlmforge.shapes.world.phrasings import canonical
from vlmforge.shapes.world.questions import GENERATORS, Context
from vlmforge.shapes.world.scene import Scene, SceneObject
from vlmforge.synth.genixer.parse import canonical_boxes
from vlmforge.synth.genixer.tasks import clean_question

IOU_CORRECT = 0.5
_OPTION_LINE = re.compile(r"^\s*\(?([A-J])[.):]\s+(.+?)\s*$", re.MULTILINE)
_LETTER = re.compile(r"^\(?([A-Ja-j])(?:[.):]|\s|$)")  # "B", "B.", "(B)", "B. red"
_REGION = re.compile(r"^what is in the region (\[[^\]]+\])\?$")
_WHERE = re.compile(r"^where is the (.+)\?$")
_POINT = re.compile(r"^which of the regions .+ holds the (.+)\?$")
_YES_NO_END = re.compile(r"\b(yes|no)\b[\s.!]*$")


def norm(text: str) -> str:
    """Lower case, single spaces, no ``<image>`` and no evaluation suffix: how questions are compared."""
    return " ".join(clean_question(text).lower().split())


def _boxes_in(text: str) -> list[list[float]]:
    return canonical_boxes(text)[1]


@dataclass
class SceneTruth:
    """Every answer the scene gives: ``texts`` (question -> answer), ``boxes`` (REC question -> box), ``stems``
    (multiple-choice question line -> answer), ``chains`` (Q->C^Box A question -> true chain), ``named`` (unique reference -> object index)."""

    objects: list[SceneObject]
    object_boxes: list[list[float]]
    texts: dict[str, str] = field(default_factory=dict)
    boxes: dict[str, list[float]] = field(default_factory=dict)
    stems: dict[str, str] = field(default_factory=dict)
    chains: dict[str, str] = field(default_factory=dict)
    named: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_scene_record(cls, record: dict[str, Any], config: WorldConfig) -> SceneTruth:
        """From a line of a world's ``scenes.jsonl`` (objects with their boxes, normalised and in pixels)."""
        objects = [SceneObject(o["shape"], o["color"], o["size"], o["row"], o["col"]) for o in record["objects"]]
        scene = Scene(record["id"], "train", tuple(objects), 0)
        ctx = Context(scene, [tuple(o["box_px"]) for o in record["objects"]], config, random.Random(0))
        truth = cls(objects, [list(o["box"]) for o in record["objects"]])
        for task in ("color", "shape", "count", "position", "exist"):
            for q in GENERATORS[task](ctx):
                truth.texts[norm(q.prompt)] = q.answer
                if task in ("color", "shape"):
                    truth.stems[norm(canonical(task, q.slots or {}, suffix=False))] = q.answer
        for q in GENERATORS["rec"](ctx):
            truth.boxes[norm(q.prompt)] = q.boxes[0]
        for q in GROUNDING["qcba"](ctx):
            truth.chains[norm(q.prompt)] = q.answer
        for i, obj in enumerate(objects):
            for refs in (REFERENCES, [("shape",), ("size", "shape")], [("color",), ("size", "color")]):
                ref = unique_reference(obj, objects, refs)
                if ref:
                    truth.named.setdefault(phrase(obj, ref).lower(), i)
        return truth

    def region(self, box: Sequence[float]) -> int | None:
        """The object a box points at (IoU >= 0.5), or None."""
        best = max(range(len(self.objects)), key=lambda i: iou(box, self.object_boxes[i]), default=None)
        return best if best is not None and iou(box, self.object_boxes[best]) >= IOU_CORRECT else None

    def _box_matches(self, answer: str, index: int | None) -> bool:
        found = _boxes_in(answer)
        return index is not None and len(found) == 1 and iou(found[0], self.object_boxes[index]) >= IOU_CORRECT

    def check_pair(self, question: str, answer: str, last: int | None = None) -> tuple[bool, int | None]:
        """(correct, the object the pair is about, for a follow-up "What colour is it?")."""
        q, a = norm(question), " ".join(answer.lower().split())
        if q in self.boxes:
            return self._box_matches(answer, self.region(self.boxes[q])), self.region(self.boxes[q])
        if q in self.chains:  # Q->C^Box A: a reasoning chain citing boxes, ending in Yes or No
            return self._check_chain(self.chains[q], answer), None
        if q in self.texts:
            where = _WHERE.match(q)
            if where and _boxes_in(answer):  # "Where is the X?" answered with a box (referential dialogue)
                index = self.named.get(where.group(1))
                return self._box_matches(answer, index), index
            return a.rstrip(".") == self.texts[q].lower(), self.named.get(where.group(1)) if where else None
        return self._check_special(q, question, a, answer, last)

    def _check_special(self, q: str, question: str, a: str, answer: str, last: int | None) -> tuple[bool, int | None]:
        region, where, point = _REGION.match(q), _WHERE.match(q), _POINT.match(q)
        if region:  # REG: the full phrase of the object in the box
            index = self.region(_boxes_in(region.group(1))[0])
            ok = index is not None and a.rstrip(".") == phrase(self.objects[index], ATTRIBUTE_ORDER).lower()
            return ok, index
        if where and _boxes_in(answer):
            index = self.named.get(where.group(1))
            return self._box_matches(answer, index), index
        if point:  # PointQA: the box of the named object
            index = self.named.get(point.group(1))
            return self._box_matches(answer, index), index
        if q in ("what colour is it?", "what color is it?"):
            return last is not None and a.rstrip(".") == self.objects[last].color, last
        return self._check_choice(question, answer), None

    def _check_choice(self, question: str, answer: str) -> bool:
        """Multiple choice: the question line names an attribute the scene answers; the chosen option is it."""
        lines = clean_question(question).splitlines()
        options = {m.group(1): m.group(2).strip().lower() for m in _OPTION_LINE.finditer("\n".join(lines[1:]))}
        truth = self.stems.get(norm(lines[0])) if lines else None
        chosen = _LETTER.match(answer.strip())
        return truth is not None and chosen is not None and options.get(chosen.group(1).upper()) == truth.lower()

    def _check_chain(self, truth: str, answer: str) -> bool:
        """Q->C^Box A: the same Yes/No, and each cited box on the object the true chain cites there."""
        want, got = _YES_NO_END.search(truth.lower()), _YES_NO_END.search(answer.lower())
        boxes_true, boxes_got = _boxes_in(truth), _boxes_in(answer)
        if not want or not got or want.group(1) != got.group(1) or len(boxes_true) != len(boxes_got):
            return False
        return all(iou(t, g) >= IOU_CORRECT for t, g in zip(boxes_true, boxes_got, strict=True))

    def check(self, pairs: Sequence[tuple[str, str]]) -> bool:
        """A whole sample: every turn correct, follow-ups resolved against the turn before."""
        last: int | None = None
        for question, answer in pairs:
            ok, about = self.check_pair(question, answer, last)
            if not ok:
                return False
            last = about if about is not None else last
        return bool(pairs)


def record_pairs(record: dict[str, Any]) -> list[tuple[str, str]]:
    """The (question, answer) turns of a training record."""
    turns = record["conversations"]
    return [(h["value"], g["value"]) for h, g in zip(turns[::2], turns[1::2], strict=False)]
