"""Questions with exact answers, one generator per task type.

Each generator lists every question of its task that is well posed for the scene (the object it asks about is
named unambiguously); ``questions_for`` then draws the configured number of distinct ones with the scene's own
random stream, so the same scene always gets the same questions.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from vlmforge.geometry import LETTERS, format_box, normalise_box, options_block
from vlmforge.shapes.world.config import TASKS, WorldConfig, plural
from vlmforge.shapes.world.describe import article, phrase, unique_reference
from vlmforge.shapes.world.phrasings import HELD_OUT, SHORT_ANSWER, canonical, held_out_phrasing, train_phrasing
from vlmforge.shapes.world.render import Box
from vlmforge.shapes.world.scene import Scene, position_of

__all__ = ["SHORT_ANSWER", "Question", "held_out_questions", "questions_for", "rephrase_for_training"]
# Prompt suffix from the LLaVA-1.5 evaluation prompts, as Bunny evaluates with them.
OPTION_LETTER = "\nAnswer with the option's letter from the given choices directly."


@dataclass
class Question:
    task: str
    prompt: str  # the full human turn without "<image>"
    answer: str
    subtask: str = ""
    choices: list[str] | None = None
    boxes: list[list[float]] | None = None
    # The words the prompt's template was filled with (phrasings.py), so the question can be asked in other words.
    slots: dict[str, str] | None = None
    # Several (question, answer) turns asked in order (referential dialogue); prompt/answer are the first.
    turns: list[tuple[str, str]] | None = None

    def fields(self) -> dict:
        """The optional record fields this question adds to a LLaVA record."""
        out: dict = {"task": self.task, "answer": self.answer}
        if self.subtask:
            out["subtask"] = self.subtask
        if self.choices is not None:
            out["choices"] = self.choices
        if self.boxes is not None:
            out["boxes"] = self.boxes
        return out


@dataclass
class Context:
    scene: Scene
    boxes_px: list[Box]
    config: WorldConfig
    rng: random.Random


def _color(ctx: Context) -> list[Question]:
    out = []
    for obj in ctx.scene.objects:
        ref = unique_reference(obj, ctx.scene.objects, [("shape",), ("size", "shape")])
        if ref:
            slots = {"x": phrase(obj, ref)}
            out.append(Question("color", canonical("color", slots), obj.color, slots=slots))
    return out


def _shape(ctx: Context) -> list[Question]:
    out = []
    for obj in ctx.scene.objects:
        ref = unique_reference(obj, ctx.scene.objects, [("color",), ("size", "color")])
        if ref:
            slots = {"x": phrase(obj, ref)}
            out.append(Question("shape", canonical("shape", slots), obj.shape, slots=slots))
    return out


def _count(ctx: Context) -> list[Question]:
    objects = ctx.scene.objects
    total = {"things": "objects"}
    out = [Question("count", canonical("count", total), str(len(objects)), "total", slots=total)]
    # Only shapes that are present: an absent shape would make "0" an answer outside 1..max_objects.
    for shape, n in sorted(Counter(o.shape for o in objects).items()):
        slots = {"things": plural(shape)}
        out.append(Question("count", canonical("count", slots), str(n), "shape", slots=slots))
    return out


def _position(ctx: Context) -> list[Question]:
    out = []
    for obj in ctx.scene.objects:
        ref = unique_reference(obj, ctx.scene.objects, [("color", "shape"), ("size", "color", "shape")])
        if ref:
            answer, slots = position_of(obj, ctx.config.grid), {"x": phrase(obj, ref)}
            out.append(Question("position", canonical("position", slots), answer, slots=slots))
    return out


def _exist_question(color: str, shape: str, answer: str, kind: str) -> Question:
    slots = {"a_x": article(f"{color} {shape}")}
    return Question("exist", canonical("exist", slots), answer, kind, slots=slots)


def _exist(ctx: Context) -> list[Question]:
    """Positives and POPE-style negatives; ``questions_for`` alternates them so the task stays balanced."""
    objects, config = ctx.scene.objects, ctx.config
    present = {(o.color, o.shape) for o in objects}
    out = [_exist_question(c, s, "Yes", "positive") for c, s in sorted(present)]
    colors, shapes = {o.color for o in objects}, {o.shape for o in objects}
    for color in config.colors:
        for shape in config.shapes:
            if (color, shape) not in present:
                # Adversarial: shares a colour or a shape with something that is there.
                kind = "adversarial" if color in colors or shape in shapes else "random"
                out.append(_exist_question(color, shape, "No", kind))
    return out


def _multiple_choice(kind: str, x: str, answer: str, vocab: tuple[str, ...], rng: random.Random) -> Question:
    options = [answer, *rng.sample([v for v in vocab if v != answer], 3)]
    rng.shuffle(options)
    lines = options_block(dict(zip(LETTERS[: len(options)], options, strict=True)))
    letter = LETTERS[options.index(answer)]
    question = canonical(kind, {"x": x}, suffix=False)
    return Question("mc", f"{question}\n{lines}{OPTION_LETTER}", letter, kind, options, slots={"x": x})


def _mc(ctx: Context) -> list[Question]:
    objects, config, out = ctx.scene.objects, ctx.config, []
    for obj in objects:
        ref = unique_reference(obj, objects, [("shape",), ("size", "shape")])
        if ref and len(config.colors) >= 4:
            out.append(_multiple_choice("color", phrase(obj, ref), obj.color, config.colors, ctx.rng))
        ref = unique_reference(obj, objects, [("color",), ("size", "color")])
        if ref and len(config.shapes) >= 4:
            out.append(_multiple_choice("shape", phrase(obj, ref), obj.shape, config.shapes, ctx.rng))
    return out


def _rec(ctx: Context) -> list[Question]:
    out = []
    for obj, box in zip(ctx.scene.objects, ctx.boxes_px, strict=True):
        ref = unique_reference(obj, ctx.scene.objects, [("color", "shape"), ("size", "color", "shape")])
        if ref:
            norm, slots = normalise_box(box, ctx.config.image_size), {"x": phrase(obj, ref)}
            out.append(Question("rec", canonical("rec", slots), format_box(norm), boxes=[norm], slots=slots))
    return out


GENERATORS: dict[str, Callable[[Context], list[Question]]] = {
    "color": _color,
    "shape": _shape,
    "count": _count,
    "position": _position,
    "exist": _exist,
    "mc": _mc,
    "rec": _rec,
}


def _draw_exist(candidates: list[Question], k: int, rng: random.Random) -> list[Question]:
    """Alternate "Yes" and "No" (random start) so that any k keeps the task balanced over the dataset."""
    positives = [q for q in candidates if q.answer == "Yes"]
    negatives = [q for q in candidates if q.answer == "No"]
    by_kind: dict[str, list[Question]] = {}
    for q in negatives:
        by_kind.setdefault(q.subtask, []).append(q)
    rng.shuffle(positives)
    picked: list[Question] = []
    start = rng.randrange(2)
    for i in range(k):
        if (i + start) % 2 == 0 and positives:
            picked.append(positives.pop())
        elif by_kind:
            kind = rng.choice(sorted(by_kind))  # random vs adversarial 50/50 when both exist
            pool = by_kind[kind]
            picked.append(pool.pop(rng.randrange(len(pool))))
            if not pool:
                del by_kind[kind]
    return picked


def questions_for(scene: Scene, boxes_px: list[Box], config: WorldConfig) -> list[Question]:
    """The configured question mix for one scene, in task order, deterministic in the scene's seed."""
    rng = random.Random(scene.seed)
    ctx = Context(scene, boxes_px, config, rng)
    out: list[Question] = []
    for task in TASKS:
        k = int(config.questions.get(task, 0))
        if k <= 0:
            continue
        candidates = GENERATORS[task](ctx)
        if task == "exist":
            out.extend(_draw_exist(candidates, k, rng))
        else:
            out.extend(rng.sample(candidates, min(k, len(candidates))))
    return out


def _phrasing_rng(scene: Scene, purpose: str) -> random.Random:
    # A stream of its own per scene, so that the questions drawn (and the canonical test split) do not depend on it.
    return random.Random(f"{purpose}-{scene.seed}")


def rephrase_for_training(questions: list[Question], scene: Scene, share: float) -> list[Question]:
    """The questions as training records ask them: ``share`` of them in another training phrasing (phrasings.py),
    multiple choice in another wording of its question line; answers, options and order unchanged."""
    rng = _phrasing_rng(scene, "phrasing")
    out = []
    for q in questions:
        if q.slots is None:
            out.append(q)
        elif q.task == "mc":
            stem, options = q.prompt.split("\n", 1)
            new_stem = train_phrasing(q.subtask, q.slots, rng, share).split("\n", 1)[0]
            out.append(replace(q, prompt=f"{new_stem}\n{options}"))
        else:
            out.append(replace(q, prompt=train_phrasing(q.task, q.slots, rng, share)))
    return out


def held_out_questions(questions: list[Question], scene: Scene) -> list[Question]:
    """The questions of the types that have held-out phrasings, each asked in one of them (the test split's
    ``paraphrased`` records); answers unchanged."""
    rng = _phrasing_rng(scene, "held-out")
    return [
        replace(q, prompt=held_out_phrasing(q.task, q.slots, rng))
        for q in questions
        if q.slots is not None and q.task in HELD_OUT
    ]
