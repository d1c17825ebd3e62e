"""The one interface every image tokenizer offers the unified model: images to codes and codes to images.

An image tokenizer has a codebook of ``codebook_size`` codes and turns one image into a ``grid`` of
``rows x columns`` codes, read row by row. The shapes world's k-means tokenizer and the Chameleon VQ-VAE wrapper
both implement it; ``check_fits`` refuses a tokenizer whose codes the model cannot hold.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from PIL import Image

from vlmforge.errors import ConfigError

LOADER_FILE = "image_tokenizer.json"


@runtime_checkable
class ImageTokenizer(Protocol):
    codebook_size: int
    grid: tuple[int, int]  # (rows, columns) of codes per image

    def encode(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """RGB images -> codes ``[len(images), rows * columns]`` (int64, in ``[0, codebook_size)``)."""
        ...

    def decode(self, codes: torch.Tensor) -> list[Image.Image]:
        """Codes ``[n, rows * columns]`` -> n RGB images."""
        ...


def check_codes(codes: torch.Tensor, tokenizer: ImageTokenizer) -> torch.Tensor:
    """``codes`` as int64 ``[n, rows * columns]``, or a clear error naming what is wrong."""
    codes = torch.as_tensor(codes)
    per_image = tokenizer.grid[0] * tokenizer.grid[1]
    if codes.dim() != 2 or codes.shape[1] != per_image:
        raise ValueError(f"codes must be [images, {per_image}] for a {tokenizer.grid} grid, got {list(codes.shape)}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= tokenizer.codebook_size):
        raise ValueError(
            f"codes must lie in [0, {tokenizer.codebook_size}), got {int(codes.min())}..{int(codes.max())}"
        )
    return codes.long()


def check_fits(tokenizer: ImageTokenizer, config: Any) -> None:
    """Refuse an image tokenizer whose codebook or grid differs from the unified model's (``UnifiedConfig``)."""
    if tokenizer.codebook_size != config.codebook_size:
        raise ConfigError(
            f"the image tokenizer has {tokenizer.codebook_size} codes but the model holds {config.codebook_size}: "
            "build the model for this tokenizer's codebook"
        )
    if tuple(tokenizer.grid) != tuple(config.image_grid):
        raise ConfigError(
            f"the image tokenizer makes a {tuple(tokenizer.grid)} code grid but the model draws "
            f"{tuple(config.image_grid)}"
        )


def write_loader(folder: str | Path, tokenizer: ImageTokenizer) -> None:
    """Record in a saved tokenizer's folder which class loads it (``module:Class``, with its ``load(folder)``),
    so ``load_image_tokenizer`` opens any kind without the core importing the module that defines it."""
    cls = type(tokenizer)
    info = {
        "loader": f"{cls.__module__}:{cls.__qualname__}",
        "codebook_size": tokenizer.codebook_size,
        "grid": list(tokenizer.grid),
    }
    (Path(folder) / LOADER_FILE).write_text(json.dumps(info, indent=2) + "\n")


def load_image_tokenizer(folder: str | Path) -> ImageTokenizer:
    """Open a saved image tokenizer of any kind (its folder names its loader; only vlmforge's own are trusted)."""
    path = Path(folder) / LOADER_FILE
    if not path.is_file():
        raise ConfigError(f"'{folder}' is not a saved image tokenizer (no {LOADER_FILE})")
    module, _, name = json.loads(path.read_text())["loader"].partition(":")
    if not module.startswith("vlmforge."):
        raise ConfigError(f"{path}: loader {module!r} is outside vlmforge; refusing to import it")
    return getattr(importlib.import_module(module), name).load(folder)
