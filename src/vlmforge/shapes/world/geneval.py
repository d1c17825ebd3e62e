"""An exact GenEval for the shapes world: prompts with checkable requirements, and the checker that scores
generated images against them.

GenEval (Ghosh et al., 2023) scores text-to-image models on six categories: single object, two objects,
counting, colours, position and colour attribution. Each prompt carries requirements: shapes that must appear
(``include``, at least ``count`` each, optionally of a colour or in a relation to an earlier include) and shapes
that must not appear that often (``exclude``, which makes counting exact). GenEval finds objects with a detector;
here ``readback.read_scene`` reads them exactly, so a clean render of an item's target scene always passes.

Each item's prompt is the world's caption of a *target scene* drawn to fit its category; target scenes fall in
the test split (by the world's scene hash), so no trained model has seen them. The default caption style is
"detailed" because only it names positions.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from vlmforge.errors import ConfigError
from vlmforge.shapes.world.config import WorldConfig
from vlmforge.shapes.world.describe import detailed_caption, short_caption
from vlmforge.shapes.world.readback import read_scene
from vlmforge.shapes.world.scene import Scene, SceneObject, split_of

CATEGORIES = ("single_object", "two_objects", "counting", "colors", "position", "color_attr")
RELATIONS = ("left of", "right of", "above", "below")


@dataclass(frozen=True)
class Requirement:
    """``count`` objects of ``shape``; of ``color`` if set; each in ``relation`` to every object matched by the
    include at index ``target`` if set."""

    shape: str
    count: int = 1
    color: str | None = None
    relation: str | None = None
    target: int | None = None


@dataclass(frozen=True)
class GenEvalItem:
    id: str
    category: str
    prompt: str
    include: tuple[Requirement, ...]
    exclude: tuple[Requirement, ...]
    scene: Scene  # the target scene the prompt describes; its render passes every requirement


def relations(obj: SceneObject, other: SceneObject) -> set[str]:
    """Where ``obj`` is relative to ``other``, by grid cell."""
    found = set()
    if obj.col != other.col:
        found.add("left of" if obj.col < other.col else "right of")
    if obj.row != other.row:
        found.add("above" if obj.row < other.row else "below")
    return found


def check(objects: Sequence[SceneObject], item: GenEvalItem) -> tuple[bool, list[str]]:
    """GenEval's rule for one image's objects: (passed, reasons it failed)."""
    reasons: list[str] = []
    matched: list[list[SceneObject] | None] = []
    for req in item.include:
        candidates = [o for o in objects if o.shape == req.shape]
        candidates.sort(key=lambda o: o.color != req.color)  # the right colour first, as a detector's best guess
        found = candidates[: req.count]
        ok = len(found) >= req.count
        if not ok:
            reasons.append(f"expected {req.count} {req.shape}, found {len(candidates)}")
        elif req.color is not None and sum(o.color == req.color for o in found) < req.count:
            ok = False
            reasons.append(f"expected {req.color} {req.shape}, found {[o.color for o in found]}")
        elif req.relation is not None:
            targets = matched[req.target]
            if targets is None or any(req.relation not in relations(o, t) for o in found for t in targets):
                ok = False
                reasons.append(f"expected {req.shape} {req.relation} {item.include[req.target].shape}")
        matched.append(found if ok else None)
    for req in item.exclude:
        n = sum(o.shape == req.shape for o in objects)
        if n >= req.count:
            reasons.append(f"expected fewer than {req.count} {req.shape}, found {n}")
    return not reasons, reasons


def score_images(items: Sequence[GenEvalItem], images: Sequence[Image.Image], config: WorldConfig) -> dict:
    """Accuracy per category and overall (the mean over categories, as GenEval reports), with per-item results."""
    if len(items) != len(images):
        raise ValueError(f"{len(items)} items but {len(images)} images")
    per_item = []
    for item, image in zip(items, images, strict=True):
        passed, reasons = check(read_scene(image, config), item)
        per_item.append({"id": item.id, "category": item.category, "passed": passed, "reasons": reasons})
    categories = {}
    for category in CATEGORIES:
        results = [r["passed"] for r in per_item if r["category"] == category]
        if results:
            categories[category] = sum(results) / len(results)
    overall = sum(categories.values()) / len(categories) if categories else 0.0
    return {"overall": overall, "categories": categories, "items": per_item}


def _objects(rng: random.Random, config: WorldConfig, shapes: Sequence[str], colors: Sequence[str | None]):
    cells = sorted(rng.sample(range(config.grid**2), len(shapes)))
    objects = []
    for cell, shape, color in zip(rng.sample(cells, len(cells)), shapes, colors, strict=True):
        dx, dy = (round(rng.random(), 4), round(rng.random(), 4)) if config.jitter else (0.5, 0.5)
        objects.append(
            SceneObject(shape, color or rng.choice(config.colors), rng.choice(config.sizes),
                        cell // config.grid, cell % config.grid, dx, dy)
        )  # fmt: skip
    return objects


def _draw(category: str, rng: random.Random, config: WorldConfig):
    """Objects of one target scene for ``category`` (in the order the requirements name them) and the
    requirements they meet."""
    if category in ("single_object", "colors"):
        [obj] = _objects(rng, config, [rng.choice(config.shapes)], [None])
        return [obj], (Requirement(obj.shape, color=obj.color if category == "colors" else None),), ()
    if category == "counting":
        n = rng.randint(2, min(4, config.max_objects))
        objs = _objects(rng, config, [rng.choice(config.shapes)] * n, [None] * n)
        return objs, (Requirement(objs[0].shape, count=n),), (Requirement(objs[0].shape, count=n + 1),)
    shapes = rng.sample(config.shapes, 2)
    colors = rng.sample(config.colors, 2) if category == "color_attr" else [None, None]
    a, b = _objects(rng, config, shapes, colors)
    if category == "two_objects":
        return [a, b], (Requirement(a.shape), Requirement(b.shape)), ()
    if category == "color_attr":
        return [a, b], (Requirement(a.shape, color=a.color), Requirement(b.shape, color=b.color)), ()
    relation = rng.choice(sorted(relations(b, a)))
    return [a, b], (Requirement(a.shape), Requirement(b.shape, relation=relation, target=0)), ()


def _feasible(category: str, config: WorldConfig) -> None:
    pairs = category in ("two_objects", "position", "color_attr")
    if (pairs or category == "counting") and config.max_objects < 2:
        raise ConfigError(f"GenEval category {category} needs scenes of 2 objects; this world has max_objects 1")
    if pairs and len(config.shapes) < 2:
        raise ConfigError(f"GenEval category {category} needs 2 shapes; this world has {list(config.shapes)}")
    if category == "color_attr" and len(config.colors) < 2:
        raise ConfigError(f"GenEval category {category} needs 2 colours; this world has {list(config.colors)}")


def make_items(
    config: WorldConfig, per_category: int = 50, seed: int = 0, style: str = "detailed"
) -> list[GenEvalItem]:
    """``per_category`` items of every category, with distinct held-out target scenes within a category. The
    default world has about 65 held-out one-object scenes, which bounds ``per_category`` there."""
    if style not in ("short", "detailed"):
        raise ConfigError(f"style must be 'short' or 'detailed', got {style!r}")
    rng, items = random.Random(seed), []
    for category in CATEGORIES:
        _feasible(category, config)
        made, seen = 0, set()
        for _ in range(2000 * per_category):
            if made == per_category:
                break
            objects, include, exclude = _draw(category, rng, config)
            scene = Scene(f"geneval-{category}-{made:04d}", "test", tuple(sorted(objects, key=lambda o: (o.row, o.col))),
                          rng.getrandbits(32))  # fmt: skip
            if scene.key in seen or split_of(scene.key, config.test_fraction) != "test":
                continue
            seen.add(scene.key)
            prompt = detailed_caption(scene, config) if style == "detailed" else short_caption(scene)
            items.append(GenEvalItem(scene.id, category, prompt, include, exclude, scene))
            made += 1
        if made < per_category:
            raise ConfigError(f"could only draw {made} held-out {category} scenes; ask for fewer per category")
    return items
