"""Image URLs from chat requests -> PIL images, with size and pixel limits checked before decoding."""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image

from vlmforge.serve.errors import APIError
from vlmforge.serve.settings import ServeSettings

# Formats with plain, in-process decoders only (EPS, for one, would shell out to Ghostscript).
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
FETCH_TIMEOUT_S = 10.0


def load_image(url: str, settings: ServeSettings, param: str) -> Image.Image:
    """Decode a ``data:``, ``http(s)://`` (if allowed) or ``file://`` (if allowed) image URL."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        data = _from_data_url(url, settings, param)
    elif scheme in ("http", "https"):
        if not settings.allow_remote_images:
            raise APIError(
                400,
                "remote image URLs are disabled on this server; send the image inline as a "
                "base64 data: URL (or start the server with --allow-remote-images)",
                param,
                "image_url_refused",
            )
        data = _fetch(url, settings, param)
    elif scheme == "file":
        data = _read_local(url, settings, param)
    else:
        raise APIError(400, "image_url must be a data: URL (data:image/png;base64,...)", param, "invalid_image_url")
    return decode(data, settings, param)


def decode(data: bytes, settings: ServeSettings, param: str) -> Image.Image:
    if len(data) > settings.max_image_bytes:
        raise APIError(
            413, f"image is {len(data)} bytes; the limit is {settings.max_image_bytes}", param, "image_too_large"
        )
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
        width, height = image.size
        if width * height > settings.max_image_pixels:
            raise APIError(
                413,
                f"image is {width}x{height} pixels; the limit is {settings.max_image_pixels} pixels",
                param,
                "image_too_large",
            )
        image.load()
        return image.convert("RGB")
    except APIError:
        raise
    except Image.DecompressionBombError as err:
        raise APIError(413, f"image refused: {err}", param, "image_too_large") from err
    except (OSError, ValueError, SyntaxError, Image.UnidentifiedImageError) as err:
        raise APIError(
            400, f"could not decode the image ({', '.join(FORMATS)} accepted)", param, "invalid_image"
        ) from err


def _from_data_url(url: str, settings: ServeSettings, param: str) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or not header.lower().endswith(";base64") or not header.lower().startswith("data:image/"):
        raise APIError(400, "data URL must look like data:image/png;base64,<data>", param, "invalid_image_url")
    if len(payload) * 3 // 4 > settings.max_image_bytes:  # refuse before allocating the decoded bytes
        raise APIError(
            413, f"image is larger than the limit of {settings.max_image_bytes} bytes", param, "image_too_large"
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as err:
        raise APIError(400, "image data is not valid base64", param, "invalid_image_url") from err


def _fetch(url: str, settings: ServeSettings, param: str) -> bytes:
    import httpx

    limit = settings.max_image_bytes
    try:
        # no redirects: a public URL must not bounce the server to an internal address
        with httpx.stream("GET", url, timeout=FETCH_TIMEOUT_S, follow_redirects=False) as response:
            if response.status_code != 200:
                raise APIError(400, f"fetching the image gave HTTP {response.status_code}", param, "image_fetch_failed")
            data = bytearray()
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) > limit:
                    raise APIError(413, f"image is larger than the limit of {limit} bytes", param, "image_too_large")
            return bytes(data)
    except httpx.HTTPError as err:
        raise APIError(400, f"could not fetch the image: {type(err).__name__}", param, "image_fetch_failed") from err


def _read_local(url: str, settings: ServeSettings, param: str) -> bytes:
    root = settings.local_image_root
    if root is None:
        raise APIError(
            400, "file:// image URLs are disabled on this server (see --allow-local-images)", param, "image_url_refused"
        )
    path = Path(unquote(urlparse(url).path)).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        raise APIError(
            400, "file:// image URL is outside the allowed folder or does not exist", param, "image_url_refused"
        )
    if path.stat().st_size > settings.max_image_bytes:
        raise APIError(
            413, f"image is larger than the limit of {settings.max_image_bytes} bytes", param, "image_too_large"
        )
    return path.read_bytes()
