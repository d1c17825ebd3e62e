"""Words for scenes: captions, position phrases and referring expressions that pick out exactly one object."""

from __future__ import annotations

from collections.abc import Sequence

from vlmforge.shapes.world.config import WorldConfig
from vlmforge.shapes.world.scene import Scene, SceneObject, position_of

# Attribute order inside a noun phrase: "large red circle".
ATTRIBUTE_ORDER = ("size", "color", "shape")


def phrase(obj: SceneObject, attributes: Sequence[str]) -> str:
    """Noun phrase naming ``attributes`` of ``obj``; "object" stands in when the shape is not named."""
    words = [getattr(obj, a) for a in ATTRIBUTE_ORDER if a in attributes]
    if "shape" not in attributes:
        words.append("object")
    return " ".join(words)


def unique_reference(
    obj: SceneObject, objects: Sequence[SceneObject], options: Sequence[Sequence[str]]
) -> tuple[str, ...] | None:
    """The first attribute set in ``options`` that no other object shares with ``obj``; None if none does."""
    for attributes in options:
        matches = [o for o in objects if all(getattr(o, a) == getattr(obj, a) for a in attributes)]
        if len(matches) == 1:
            return tuple(attributes)
    return None


def article(noun_phrase: str) -> str:
    return ("an " if noun_phrase[0] in "aeiou" else "a ") + noun_phrase


def position_phrase(position: str) -> str:
    """ "top left" -> "at the top left", "center" -> "in the center", "left" -> "on the left"."""
    if position == "center":
        return "in the center"
    if position in ("left", "right"):
        return f"on the {position}"
    if position.startswith("row "):
        return f"in {position}"
    return f"at the {position}"


def join_words(items: Sequence[str]) -> str:
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def short_caption(scene: Scene) -> str:
    """ "a large red circle and a small blue square" (objects in reading order)."""
    return join_words([article(phrase(o, ATTRIBUTE_ORDER)) for o in scene.objects])


def detailed_caption(scene: Scene, config: WorldConfig) -> str:
    """Count first, then every object with size, colour, shape and position."""
    n = len(scene.objects)
    parts = ["There is 1 object." if n == 1 else f"There are {n} objects."]
    for obj in scene.objects:
        noun = article(phrase(obj, ATTRIBUTE_ORDER))
        parts.append(f"{noun[0].upper()}{noun[1:]} {position_phrase(position_of(obj, config.grid))}.")
    return " ".join(parts)
