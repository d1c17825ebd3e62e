"""Drawing for the two procedural own-data sets (vlmforge.testing.own_data): seven-segment digits on textured
backgrounds, and a large outline object with a small dot beside it.

Hand-drawn with PIL and numpy rather than a font, so the images are the same on every machine.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64

# Segments a..g of a seven-segment digit, and which are lit for each digit.
SEGMENTS = "abcdefg"
DIGIT_SEGMENTS = {
    "0": "abcdef",
    "1": "bc",
    "2": "abdeg",
    "3": "abcdg",
    "4": "bcfg",
    "5": "acdfg",
    "6": "acdefg",
    "7": "abc",
    "8": "abcdefg",
    "9": "abcdfg",
}
COLOURS = {
    "red": (220, 40, 40),
    "blue": (40, 80, 230),
    "green": (40, 180, 60),
    "yellow": (230, 210, 40),
    "pink": (240, 120, 200),
    "cyan": (40, 210, 220),
    "white": (245, 245, 245),
}
PATTERNS = ("plain", "stripes", "bars", "checks", "dots", "noise")
OBJECTS = ("ring", "arch", "tee", "hourglass", "frame")
RELATIONS = {"above": (0, -1), "below": (0, 1), "left": (-1, 0), "right": (1, 0)}
GLYPH_W, GLYPH_H, STROKE = 28, 46, 7
DOT_DISTANCE, DOT_RADIUS, OBJECT_HALF, OBJECT_STROKE = 21, 5, 12, 4


def segment_boxes(x: int, y: int) -> dict[str, tuple[int, int, int, int]]:
    """Each segment's rectangle (x0, y0, x1, y1) for a digit whose box starts at (x, y)."""
    w, h, t = GLYPH_W, GLYPH_H, STROKE
    mid = y + (h - t) // 2
    return {
        "a": (x, y, x + w, y + t),
        "b": (x + w - t, y, x + w, mid + t),
        "c": (x + w - t, mid, x + w, y + h),
        "d": (x, y + h - t, x + w, y + h),
        "e": (x, mid, x + t, y + h),
        "f": (x, y, x + t, mid + t),
        "g": (x, mid, x + w, mid + t),
    }


def texture(pattern: str, rng: np.random.Generator) -> np.ndarray:
    """A SIZE x SIZE x 3 grey background of the named pattern, with a random tone and period."""
    base, ink = int(rng.integers(50, 90)), int(rng.integers(120, 160))
    period = int(rng.integers(6, 10))
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    if pattern == "plain":
        mask = np.zeros((SIZE, SIZE), bool)
    elif pattern == "stripes":
        mask = (yy % period) < period // 2
    elif pattern == "bars":
        mask = (xx % period) < period // 2
    elif pattern == "checks":
        mask = ((xx // period) + (yy // period)) % 2 == 0
    elif pattern == "dots":
        mask = ((xx % period) - period // 2) ** 2 + ((yy % period) - period // 2) ** 2 <= 2
    elif pattern == "noise":
        mask = rng.random((SIZE, SIZE)) < 0.5
    else:
        raise ValueError(f"unknown pattern {pattern!r}; patterns: {', '.join(PATTERNS)}")
    grey = np.where(mask, ink, base).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def draw_digit(digit: str, colour: str, pattern: str, xy: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    image = Image.fromarray(texture(pattern, rng))
    draw = ImageDraw.Draw(image)
    boxes = segment_boxes(*xy)
    for name in DIGIT_SEGMENTS[digit]:
        x0, y0, x1, y1 = boxes[name]
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=COLOURS[colour])
    return image


def _draw_object(draw: ImageDraw.ImageDraw, name: str, cx: int, cy: int, fill: tuple[int, int, int]) -> None:
    r, t = OBJECT_HALF, OBJECT_STROKE
    box = (cx - r, cy - r, cx + r, cy + r)
    if name == "ring":
        draw.ellipse(box, outline=fill, width=t)
    elif name == "arch":
        draw.arc(box, 180, 360, fill=fill, width=t)
        draw.rectangle((cx - r, cy, cx - r + t - 1, cy + r), fill=fill)
        draw.rectangle((cx + r - t + 1, cy, cx + r, cy + r), fill=fill)
    elif name == "tee":
        draw.rectangle((cx - r, cy - r, cx + r, cy - r + t), fill=fill)
        draw.rectangle((cx - t // 2 - 1, cy - r, cx + t // 2 + 1, cy + r), fill=fill)
    elif name == "hourglass":
        draw.polygon([(cx - r, cy - r), (cx + r, cy - r), (cx, cy)], fill=fill)
        draw.polygon([(cx - r, cy + r), (cx + r, cy + r), (cx, cy)], fill=fill)
    elif name == "frame":
        draw.rectangle(box, outline=fill, width=t)
    else:
        raise ValueError(f"unknown object {name!r}; objects: {', '.join(OBJECTS)}")


def dot_centre(centre: tuple[int, int], relation: str) -> tuple[int, int]:
    dx, dy = RELATIONS[relation]
    return centre[0] + dx * DOT_DISTANCE, centre[1] + dy * DOT_DISTANCE


def draw_pair(name: str, relation: str, colour: str, centre: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A light-grey outline object at ``centre`` and a ``colour`` dot on its ``relation`` side, on dark noise."""
    background = rng.integers(15, 45, size=(SIZE, SIZE, 1)).repeat(3, axis=2).astype(np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    tone = int(rng.integers(150, 200))
    _draw_object(draw, name, *centre, fill=(tone, tone, tone))
    x, y = dot_centre(centre, relation)
    r = DOT_RADIUS
    draw.ellipse((x - r, y - r, x + r, y + r), fill=COLOURS[colour])
    return image
