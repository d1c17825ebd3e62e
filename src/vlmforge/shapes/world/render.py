"""Drawing a scene with PIL, and measuring the exact pixel box of every drawn shape.

Each shape is drawn once as a binary mask (cached per shape and pixel size) and pasted in its colour; the box is
the mask's ``getbbox()`` moved to where it was pasted, so boxes are the drawn pixels, not the intended geometry.
PIL's ImageDraw does not anti-alias, so every shape pixel has exactly its object's colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from vlmforge.shapes.world.config import COLOR_RGB, SIZE_FRACTION, WorldConfig
from vlmforge.shapes.world.scene import Scene, SceneObject

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels; x2/y2 exclusive, as PIL's getbbox


@dataclass
class RenderedScene:
    image: Image.Image
    boxes_px: list[Box]  # aligned with scene.objects


def _star_points(s: int) -> list[tuple[float, float]]:
    c, outer = (s - 1) / 2, (s - 1) / 2
    inner = outer * 0.45
    points = []
    for k in range(10):
        radius = outer if k % 2 == 0 else inner
        angle = -math.pi / 2 + k * math.pi / 5
        points.append((c + radius * math.cos(angle), c + radius * math.sin(angle)))
    return points


@lru_cache(maxsize=256)
def shape_mask(shape: str, s: int) -> Image.Image:
    """An s x s mode-"L" mask of ``shape`` (255 inside). Cached: do not draw on the result."""
    mask = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(mask)
    e, m = s - 1, (s - 1) / 2
    if shape == "circle":
        draw.ellipse((0, 0, e, e), fill=255)
    elif shape == "square":
        draw.rectangle((0, 0, e, e), fill=255)
    elif shape == "triangle":
        draw.polygon([(m, 0), (e, e), (0, e)], fill=255)
    elif shape == "diamond":
        draw.polygon([(m, 0), (e, m), (m, e), (0, m)], fill=255)
    elif shape == "star":
        draw.polygon(_star_points(s), fill=255)
    elif shape == "cross":
        t0, t1 = round(s / 3), round(2 * s / 3) - 1
        draw.rectangle((t0, 0, t1, e), fill=255)
        draw.rectangle((0, t0, e, t1), fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return mask


def cell_bounds(row: int, col: int, config: WorldConfig) -> Box:
    """Pixel bounds of a grid cell; rounding spreads the remainder so cells tile the image exactly."""
    w, g = config.image_size, config.grid
    return round(col * w / g), round(row * w / g), round((col + 1) * w / g), round((row + 1) * w / g)


def shape_side(size: str, row: int, col: int, config: WorldConfig) -> int:
    """Side in pixels of the square a shape of ``size`` is drawn in, in cell (row, col)."""
    x0, y0, x1, y1 = cell_bounds(row, col, config)
    return max(3, round(SIZE_FRACTION[size] * min(x1 - x0, y1 - y0)))


def _place(obj: SceneObject, config: WorldConfig) -> tuple[int, int, int]:
    x0, y0, x1, y1 = cell_bounds(obj.row, obj.col, config)
    side = shape_side(obj.size, obj.row, obj.col, config)
    left = x0 + round(obj.dx * (x1 - x0 - side))
    top = y0 + round(obj.dy * (y1 - y0 - side))
    return left, top, side


def _background(scene: Scene, config: WorldConfig) -> Image.Image:
    size = (config.image_size, config.image_size)
    if not config.background_noise:
        return Image.new("RGB", size, config.background)
    rng = np.random.default_rng(scene.seed)
    amp = config.background_noise
    noise = rng.integers(-amp, amp + 1, size=(*size, 3), dtype=np.int16)
    pixels = np.clip(np.asarray(config.background, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def render_scene(scene: Scene, config: WorldConfig) -> RenderedScene:
    image = _background(scene, config)
    boxes: list[Box] = []
    for obj in scene.objects:
        left, top, side = _place(obj, config)
        mask = shape_mask(obj.shape, side)
        image.paste(COLOR_RGB[obj.color], (left, top, left + side, top + side), mask)
        bx0, by0, bx1, by1 = mask.getbbox()
        boxes.append((left + bx0, top + by0, left + bx1, top + by1))
    return RenderedScene(image=image, boxes_px=boxes)
