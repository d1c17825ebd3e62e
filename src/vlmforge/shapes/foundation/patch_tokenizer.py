"""The shapes world's image tokenizer: k-means over image patches, trained here in well under a minute.

Every pixel is first named by its nearest colour of the world's palette (background and object colours), and a
``patch x patch`` block becomes a one-hot map of those names; k-means runs in that space, so a centroid is, per
pixel, how often each colour occurs there. Encoding gives each block its nearest centroid; decoding paints every
pixel of a centroid with its most frequent colour, so decoded images are flat-coloured like renders, which the
exact GenEval checker reads. Clustering colour names rather than RGB values keeps a red-and-orange edge from
decoding as a third colour. It implements ``vlmforge.models.image_tokenizer.ImageTokenizer`` and is saved as
safetensors (centroids) plus JSON (palette and sizes).

k-means is written out here in a few lines of torch: neither torch nor transformers ships one, and the
toolkit does not depend on scikit-learn.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from vlmforge.errors import ConfigError
from vlmforge.models.image_tokenizer import check_codes, write_loader

WEIGHTS, SETTINGS = "centroids.safetensors", "patch_tokenizer.json"


@dataclass
class PatchTokenizerSpec:
    """``patch``: side of a patch in pixels. ``codebook_size``: centroids. ``iterations``: Lloyd steps. Small
    patches keep the shapes' outlines; 8 px patches blur small stars and crosses into blobs. The default world
    has a little over two thousand distinct 4 px patches: more codes read back more exactly, fewer are easier
    for a small LM to learn to draw."""

    patch: int = 4
    codebook_size: int = 1024
    iterations: int = 25
    max_patches: int = 1_000_000
    seed: int = 0


class PatchTokenizer:
    """Nearest-centroid codes of fixed-size patches of palette colours; see the module doc."""

    def __init__(self, centroids: torch.Tensor, palette: Sequence[Sequence[int]], patch: int, image_size: int):
        if image_size % patch:
            raise ConfigError(f"image_size {image_size} must be a multiple of the patch size {patch}")
        self.palette = torch.tensor([list(c) for c in palette], dtype=torch.float32)  # [colours, 3]
        self.centroids = centroids.float()  # [codes, patch * patch * colours]
        if self.centroids.shape[1] != patch * patch * len(self.palette):
            raise ConfigError(f"centroids of width {self.centroids.shape[1]} do not fit {patch} px patches")
        self.patch, self.image_size = patch, image_size
        self.codebook_size = self.centroids.shape[0]
        self.grid = (image_size // patch, image_size // patch)

    def colour_names(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """[n, rows * columns, patch * patch]: each pixel's palette index, patches in reading order."""
        for image in images:
            if image.size != (self.image_size, self.image_size):
                raise ValueError(f"images must be {self.image_size}x{self.image_size} px, got {image.size}")
        pixels = torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images])).float()
        names = nearest(pixels.view(-1, 3), self.palette).view(pixels.shape[:3])
        rows, cols = self.grid
        p = self.patch
        blocks = names.view(len(images), rows, p, cols, p).permute(0, 1, 3, 2, 4)
        return blocks.reshape(len(images), rows * cols, p * p)

    def points(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """[n, rows * columns, patch * patch * colours] one-hot colour maps: the space the centroids live in."""
        return F.one_hot(self.colour_names(images), len(self.palette)).flatten(2).float()

    def code_vectors(self) -> torch.Tensor:
        """The centroids ``[codes, patch * patch * colours]``: what a unified model's ``code_init: codebook`` uses."""
        return self.centroids

    def encode(self, images: Sequence[Image.Image]) -> torch.Tensor:
        points = self.points(images)
        return nearest(points.view(-1, points.shape[-1]), self.centroids).view(points.shape[:2])

    def decode(self, codes: torch.Tensor) -> list[Image.Image]:
        codes = check_codes(codes, self)
        rows, cols = self.grid
        p = self.patch
        names = self.centroids[codes].view(len(codes), rows, cols, p, p, len(self.palette)).argmax(-1)
        pixels = self.palette[names].permute(0, 1, 3, 2, 4, 5).reshape(len(codes), rows * p, cols * p, 3)
        return [Image.fromarray(image, "RGB") for image in pixels.to(torch.uint8).numpy()]

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"centroids": self.centroids.contiguous()}, str(folder / WEIGHTS))
        settings = {
            "patch": self.patch,
            "image_size": self.image_size,
            "codebook_size": self.codebook_size,
            "palette": self.palette.int().tolist(),
        }
        (folder / SETTINGS).write_text(json.dumps(settings, indent=2) + "\n")
        write_loader(folder, self)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> PatchTokenizer:
        folder = Path(folder)
        if not (folder / SETTINGS).exists() or not (folder / WEIGHTS).exists():
            raise ConfigError(f"'{folder}' is not a saved patch tokenizer (no {SETTINGS} and {WEIGHTS})")
        settings = json.loads((folder / SETTINGS).read_text())
        centroids = load_file(str(folder / WEIGHTS))["centroids"]
        return cls(centroids, settings["palette"], settings["patch"], settings["image_size"])


def nearest(points: torch.Tensor, centroids: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """Index of the nearest centroid of every point (squared Euclidean distance), in chunks to bound memory."""
    squared = (centroids**2).sum(1)
    out = [torch.argmin(squared[None] - 2 * part @ centroids.T, dim=1) for part in points.split(chunk)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def kmeans(points: torch.Tensor, weights: torch.Tensor, k: int, iterations: int, seed: int) -> torch.Tensor:
    """Weighted Lloyd k-means. Starts from k distinct points drawn uniformly (not by weight), so the rare edge
    patches get centroids too rather than a hundred copies of the background."""
    generator = torch.Generator().manual_seed(seed)
    centroids = points[torch.randperm(len(points), generator=generator)[:k]].clone()
    for _ in range(iterations):
        assign = nearest(points, centroids)
        mass = torch.zeros(len(centroids)).index_add_(0, assign, weights)
        sums = torch.zeros_like(centroids).index_add_(0, assign, points * weights[:, None])
        filled = mass > 0  # an empty cluster keeps its centroid
        centroids[filled] = sums[filled] / mass[filled, None]
    return centroids


def train_patch_tokenizer(
    images: Sequence[Image.Image], palette: Sequence[Sequence[int]], spec: PatchTokenizerSpec | None = None
) -> PatchTokenizer:
    """k-means over the distinct patches of ``images``, each weighted by how often it occurs."""
    spec = spec or PatchTokenizerSpec()
    if not images:
        raise ConfigError("no images to train the patch tokenizer on")
    width = spec.patch * spec.patch * len(palette)
    blank = PatchTokenizer(torch.zeros(1, width), palette, spec.patch, images[0].size[0])
    names = blank.colour_names(images).reshape(-1, spec.patch * spec.patch)
    if len(names) > spec.max_patches:
        names = names[
            torch.randperm(len(names), generator=torch.Generator().manual_seed(spec.seed))[: spec.max_patches]
        ]
    distinct, counts = torch.unique(names, dim=0, return_counts=True)
    if len(distinct) < spec.codebook_size:
        raise ConfigError(
            f"only {len(distinct)} distinct patches for {spec.codebook_size} codes: use fewer codes or more images"
        )
    points = F.one_hot(distinct, len(palette)).flatten(1).float()
    centroids = kmeans(points, counts.float(), spec.codebook_size, spec.iterations, spec.seed)
    return PatchTokenizer(centroids, palette, spec.patch, images[0].size[0])


def reconstruction(tokenizer: PatchTokenizer, images: Sequence[Image.Image]) -> dict[str, float]:
    """How well ``images`` survive encode -> decode: mean squared error and PSNR over 0..255 pixels, and the
    fraction of pixels decoded to exactly their colour."""
    original = torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images])).float()
    decoded = tokenizer.decode(tokenizer.encode(images))
    back = torch.from_numpy(np.stack([np.asarray(im) for im in decoded])).float()
    mse = float(((original - back) ** 2).mean())
    return {
        "mse": mse,
        "psnr": 10 * math.log10(255**2 / mse) if mse > 0 else float("inf"),
        "exact_pixels": float((original == back).all(dim=-1).float().mean()),
        "images": len(images),
    }
