"""Boxes and option letters: the small vocabulary that evaluation, synthesis and the shapes lab share.

It sits below every other module so that a scorer, a data generator and a world can agree on one box format and
one option layout without importing each other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# Option letters as LLaVA's multiple-choice prompts and VLMEvalKit's TSVs use them.
LETTERS = "ABCDEFGHIJ"

_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
_BOX = re.compile(r"[\[(]" + ",".join([_NUM] * 4) + r"[\])]")


def normalise_box(box: Sequence[float], image_size: int) -> list[float]:
    """Genixer's box format: [x1, y1, x2, y2] divided by the image side, 3 decimals."""
    return [round(v / image_size, 3) for v in box]


def format_box(box: Sequence[float]) -> str:
    """A normalised box as the text a model reads and writes: ``[x1,y1,x2,y2]`` with 3 decimals."""
    return "[" + ",".join(f"{v:.3f}" for v in box) + "]"


def parse_box(text: str) -> list[float] | None:
    """The first "[x1, y1, x2, y2]" (or parenthesised) group of four numbers in free text."""
    m = _BOX.search(text)
    return [float(v) for v in m.groups()] if m else None


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes; degenerate or disjoint boxes give 0."""
    ax1, ay1, ax2, ay2 = min(a[0], a[2]), min(a[1], a[3]), max(a[0], a[2]), max(a[1], a[3])
    bx1, by1, bx2, by2 = min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])
    iw, ih = min(ax2, bx2) - max(ax1, bx1), min(ay2, by2) - max(ay1, by1)
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def options_block(choices: Mapping[str, str]) -> str:
    """Lettered option lines, ``A. text`` one per line, as LLaVA's multiple-choice prompt lists them."""
    return "\n".join(f"{letter}. {text}" for letter, text in choices.items())
