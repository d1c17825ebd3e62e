"""The four grounding tasks Genixer adds to the world's REC: REG, PointQA, Q->C^Box A and referential dialogue.

Answers and boxes are exact, from the scene itself. They are off by default (``questions`` in the world config
names them to switch them on) and draw from a random stream of their own, so a world built without them is
byte-identical to one built before they existed.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from vlmforge.geometry import format_box, normalise_box
from vlmforge.shapes.world.config import GROUNDING_TASKS, WorldConfig
from vlmforge.shapes.world.describe import ATTRIBUTE_ORDER, phrase, unique_reference
from vlmforge.shapes.world.questions import Context, Question
from vlmforge.shapes.world.render import Box
from vlmforge.shapes.world.scene import Scene, SceneObject

# The shortest reference that names exactly one object, tried in this order.
REFERENCES = [("color", "shape"), ("size", "color", "shape")]


def _boxes(ctx: Context) -> list[list[float]]:
    return [normalise_box(b, ctx.config.image_size) for b in ctx.boxes_px]


def _named(ctx: Context) -> list[tuple[int, SceneObject, str]]:
    """(index, object, "red circle") for every object a reference picks out alone."""
    out = []
    for i, obj in enumerate(ctx.scene.objects):
        ref = unique_reference(obj, ctx.scene.objects, REFERENCES)
        if ref:
            out.append((i, obj, phrase(obj, ref)))
    return out


def _reg(ctx: Context) -> list[Question]:
    boxes = _boxes(ctx)
    return [
        Question("reg", f"What is in the region {format_box(box)}?", phrase(obj, ATTRIBUTE_ORDER), boxes=[box])
        for obj, box in zip(ctx.scene.objects, boxes, strict=True)
    ]


def _pointqa(ctx: Context) -> list[Question]:
    boxes = _boxes(ctx)
    if len(boxes) < 2:
        return []
    candidates = ";".join(format_box(b) for b in boxes)
    return [
        Question("pointqa", f"Which of the regions {candidates} holds the {name}?", format_box(boxes[i]), boxes=boxes)
        for i, _, name in _named(ctx)
    ]


def _relation(a: SceneObject, b: SceneObject, relation: str) -> bool | None:
    """Whether a is left of / above b; None when they share the column (row), so the question is not posed."""
    if relation == "to the left of":
        return None if a.col == b.col else a.col < b.col
    return None if a.row == b.row else a.row < b.row


def _qcba(ctx: Context) -> list[Question]:
    boxes, named, out = _boxes(ctx), _named(ctx), []
    for i, a, name_a in named:
        for j, b, name_b in named:
            for relation in ("to the left of", "above"):
                truth = None if i == j else _relation(a, b, relation)
                if truth is None:
                    continue
                box_a, box_b = format_box(boxes[i]), format_box(boxes[j])
                answer = (
                    f"The {name_a} is at {box_a} and the {name_b} is at {box_b}; the {name_a} is "
                    f"{'' if truth else 'not '}{relation} the {name_b}, so the answer is {'Yes' if truth else 'No'}."
                )
                prompt = f"Is the {name_a} {relation} the {name_b}?"
                out.append(Question("qcba", prompt, answer, subtask=relation, boxes=[boxes[i], boxes[j]]))
    return out


def _ref_dialogue(ctx: Context) -> list[Question]:
    """Three turns: what is in a box, its colour, then where another object is."""
    boxes, named, out = _boxes(ctx), _named(ctx), []
    for i, obj in enumerate(ctx.scene.objects):
        turns = [
            (f"What is in the region {format_box(boxes[i])}?", phrase(obj, ATTRIBUTE_ORDER)),
            ("What colour is it?", obj.color),
        ]
        cited = [boxes[i]]
        others = [(j, name) for j, _, name in named if j != i]
        if others:
            j, name = ctx.rng.choice(others)
            turns.append((f"Where is the {name}?", format_box(boxes[j])))
            cited.append(boxes[j])
        out.append(Question("ref_dialogue", turns[0][0], turns[0][1], boxes=cited, turns=turns))
    return out


GROUNDING: dict[str, Callable[[Context], list[Question]]] = {
    "reg": _reg,
    "pointqa": _pointqa,
    "qcba": _qcba,
    "ref_dialogue": _ref_dialogue,
}
assert tuple(GROUNDING) == GROUNDING_TASKS


def grounding_questions(scene: Scene, boxes_px: list[Box], config: WorldConfig) -> list[Question]:
    """The configured number of each grounding task's questions for one scene (none by default)."""
    rng = random.Random(f"grounding-{scene.seed}")
    ctx = Context(scene, boxes_px, config, rng)
    out: list[Question] = []
    for task in GROUNDING_TASKS:
        k = int(config.questions.get(task, 0))
        if k > 0:
            candidates = GROUNDING[task](ctx)
            out.extend(rng.sample(candidates, min(k, len(candidates))))
    return out
