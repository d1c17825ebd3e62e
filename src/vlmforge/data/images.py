"""Open record images as RGB, with errors that name the record instead of a PIL stack trace."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from vlmforge.errors import DataError

# 64 megapixels: far above any training resolution, far below what a decompression bomb would allocate.
DEFAULT_MAX_PIXELS = 64_000_000


def load_image(path: str | Path, where: str, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode ``path`` fully and return it as RGB.

    Raises DataError ``missing_image`` (no such file), ``corrupt_image`` (not an image, truncated, undecodable) or
    ``image_too_large`` (more than ``max_pixels`` pixels; ``None`` disables the cap). The size is checked from the
    header, before any pixel is decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(where, f"image file {path} does not exist", code="missing_image")
    try:
        with warnings.catch_warnings():
            # Our own cap below decides; PIL's warning for large images would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if max_pixels is not None and width * height > max_pixels:
                    raise DataError(
                        where,
                        f"image {path} has {width}x{height} pixels, over the cap of {max_pixels}",
                        "image_too_large",
                    )
                image.load()  # decode now: a truncated file fails here, not inside a DataLoader worker later
                return image.convert("RGB")
    except Image.DecompressionBombError as err:
        raise DataError(where, f"image {path} is too large: {err}", code="image_too_large") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(where, f"image {path} is corrupt or truncated: {err}", code="corrupt_image") from err
