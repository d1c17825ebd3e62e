"""Questions with exact answers, one generator per task type.

Each generator lists every question of its task that is well posed for the scene (the object it asks about is
named unambiguously); ``questions_for`` then draws the configured number of distinct ones with the scene's own
random stream, so the same scene always gets the same questions.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from vlmforge.geometry import format_box, normalise_box
from vlmforge.shapes.world.config import TASKS, WorldConfig, plural
from vlmforge.shapes.world.describe import article, phrase, unique_reference
from vlmforge.shapes.world.render import Box
from vlmforge.shapes.world.scene import Scene, position_of

# Prompt suffixes from the LLaVA-1.5 evaluation prompts (REFERENCE.md, Bunny "Evaluation prompts").
SHORT_ANSWER = "\nAnswer the question using a single word or phrase."
OPTION_LETTER = "\nAnswer with the option's letter from the given choices directly."
LETTERS = "ABCD"


@dataclass
class Question:
    task: str
    prompt: str  # the full human turn without "<image>"
    answer: str
    subtask: str = ""
    choices: list[str] | None = None
    boxes: list[list[float]] | None = None

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
            out.append(Question("color", f"What colour is the {phrase(obj, ref)}?{SHORT_ANSWER}", obj.color))
    return out


def _shape(ctx: Context) -> list[Question]:
    out = []
    for obj in ctx.scene.objects:
        ref = unique_reference(obj, ctx.scene.objects, [("color",), ("size", "color")])
        if ref:
            out.append(Question("shape", f"What shape is the {phrase(obj, ref)}?{SHORT_ANSWER}", obj.shape))
    return out


def _count(ctx: Context) -> list[Question]:
    objects = ctx.scene.objects
    out = [Question("count", f"How many objects are there?{SHORT_ANSWER}", str(len(objects)), "total")]
    # Only shapes that are present: an absent shape would make "0" an answer outside 1..max_objects.
    for shape, n in sorted(Counter(o.shape for o in objects).items()):
        out.append(Question("count", f"How many {plural(shape)} are there?{SHORT_ANSWER}", str(n), "shape"))
    return out


def _position(ctx: Context) -> list[Question]:
    out = []
    for obj in ctx.scene.objects:
        ref = unique_reference(obj, ctx.scene.objects, [("color", "shape"), ("size", "color", "shape")])
        if ref:
            answer = position_of(obj, ctx.config.grid)
            out.append(Question("position", f"Where is the {phrase(obj, ref)}?{SHORT_ANSWER}", answer))
    return out


def _exist_prompt(color: str, shape: str) -> str:
    return f"Is there {article(f'{color} {shape}')} in the image?{SHORT_ANSWER}"


def _exist(ctx: Context) -> list[Question]:
    """Positives and POPE-style negatives; ``questions_for`` alternates them so the task stays balanced."""
    objects, config = ctx.scene.objects, ctx.config
    present = {(o.color, o.shape) for o in objects}
    out = [Question("exist", _exist_prompt(c, s), "Yes", "positive") for c, s in sorted(present)]
    colors, shapes = {o.color for o in objects}, {o.shape for o in objects}
    for color in config.colors:
        for shape in config.shapes:
            if (color, shape) not in present:
                # Adversarial: shares a colour or a shape with something that is there.
                kind = "adversarial" if color in colors or shape in shapes else "random"
                out.append(Question("exist", _exist_prompt(color, shape), "No", kind))
    return out


def _multiple_choice(question: str, answer: str, vocab: tuple[str, ...], rng: random.Random) -> Question:
    options = [answer, *rng.sample([v for v in vocab if v != answer], 3)]
    rng.shuffle(options)
    lines = "\n".join(f"{letter}. {text}" for letter, text in zip(LETTERS, options, strict=True))
    letter = LETTERS[options.index(answer)]
    return Question("mc", f"{question}\n{lines}{OPTION_LETTER}", letter, choices=options)


def _mc(ctx: Context) -> list[Question]:
    objects, config, out = ctx.scene.objects, ctx.config, []
    for obj in objects:
        ref = unique_reference(obj, objects, [("shape",), ("size", "shape")])
        if ref and len(config.colors) >= 4:
            q = _multiple_choice(f"What colour is the {phrase(obj, ref)}?", obj.color, config.colors, ctx.rng)
            q.subtask = "color"
            out.append(q)
        ref = unique_reference(obj, objects, [("color",), ("size", "color")])
        if ref and len(config.shapes) >= 4:
            q = _multiple_choice(f"What shape is the {phrase(obj, ref)}?", obj.shape, config.shapes, ctx.rng)
            q.subtask = "shape"
            out.append(q)
    return out


def _rec(ctx: Context) -> list[Question]:
    out = []
    for obj, box in zip(ctx.scene.objects, ctx.boxes_px, strict=True):
        ref = unique_reference(obj, ctx.scene.objects, [("color", "shape"), ("size", "color", "shape")])
        if ref:
            norm = normalise_box(box, ctx.config.image_size)
            prompt = f"Give the bounding box of the {phrase(obj, ref)}."
            out.append(Question("rec", prompt, format_box(norm), boxes=[norm]))
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
