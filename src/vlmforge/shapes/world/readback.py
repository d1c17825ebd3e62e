"""Reading an image back into a scene: the objects per grid cell, each one's colour, shape and size.

The renderer is known and flat-coloured (render.py), so reading is exact on renders: every pixel is named by its
nearest palette colour, a cell's object is its pixels of the cell's most frequent object colour, and its shape and
size are the (shape, size) whose drawn mask, the very mask the renderer pastes, overlaps it best (IoU of the masks
aligned at their top-left corners). A render reads back to its own scene; a generated image reads back to the
scene it looks like, which GenEval's checks then judge (vlmforge.shapes.world.geneval).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from vlmforge.shapes.world.config import COLOR_RGB, WorldConfig
from vlmforge.shapes.world.render import cell_bounds, shape_mask, shape_side
from vlmforge.shapes.world.scene import SceneObject

# A cell holds an object only if it has at least this share of the smallest shape's pixels there; fewer are specks.
MIN_OBJECT_SHARE = 0.5


def colour_names(image: Image.Image, config: WorldConfig) -> np.ndarray:
    """[height, width] palette index of every pixel: 0 is the background, k is ``config.colors[k - 1]``."""
    palette = np.array([config.background, *(COLOR_RGB[c] for c in config.colors)], dtype=np.float32)
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    distances = ((pixels[:, :, None, :] - palette[None, None]) ** 2).sum(-1)
    return distances.argmin(-1)


def _cropped(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return mask[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks, each cropped to its pixels and aligned at the top-left corner."""
    a, b = _cropped(a), _cropped(b)
    height, width = max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1])
    canvas_a, canvas_b = np.zeros((height, width), bool), np.zeros((height, width), bool)
    canvas_a[: a.shape[0], : a.shape[1]] = a
    canvas_b[: b.shape[0], : b.shape[1]] = b
    return float((canvas_a & canvas_b).sum() / (canvas_a | canvas_b).sum())


def _templates(row: int, col: int, config: WorldConfig) -> dict[tuple[str, str], np.ndarray]:
    return {
        (shape, size): np.asarray(shape_mask(shape, shape_side(size, row, col, config))) > 0
        for shape in config.shapes
        for size in config.sizes
    }


def read_cell(names: np.ndarray, row: int, col: int, config: WorldConfig) -> SceneObject | None:
    """The object in cell (row, col) of a colour-named image, or None when the cell is empty."""
    x0, y0, x1, y1 = cell_bounds(row, col, config)
    cell = names[y0:y1, x0:x1]
    counts = np.bincount(cell.ravel(), minlength=len(config.colors) + 1)[1:]
    templates = _templates(row, col, config)
    smallest = min(int(t.sum()) for t in templates.values())
    if counts.max() < MIN_OBJECT_SHARE * smallest:
        return None
    colour = int(counts.argmax())
    mask = cell == colour + 1
    (shape, size), _ = max(((key, mask_iou(mask, t)) for key, t in templates.items()), key=lambda kv: kv[1])
    return SceneObject(shape=shape, color=config.colors[colour], size=size, row=row, col=col)


def read_scene(image: Image.Image, config: WorldConfig) -> tuple[SceneObject, ...]:
    """Every object of an image of this world, row-major (as ``Scene.objects``). Jitter is not read back."""
    if image.size != (config.image_size, config.image_size):
        raise ValueError(f"images of this world are {config.image_size} px square, got {image.size}")
    names = colour_names(image, config)
    cells = ((r, c) for r in range(config.grid) for c in range(config.grid))
    return tuple(obj for r, c in cells if (obj := read_cell(names, r, c, config)) is not None)
