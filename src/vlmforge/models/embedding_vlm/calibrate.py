"""Test-time centring of the embedding-input VLM: compute the image mean with the model's own encoder.

The paper centres image embeddings with the mean of the test-set image embeddings; any calibration set of
unlabelled images from the same distribution works the same way. The mean is stored in the checkpoint
(buffer ``image_mean``; ``config.image_mean_count`` = images used), so inference needs nothing else.

Optionally (``text_store``) the covariance is matched too: the buffer ``image_align`` maps the centred image
embeddings onto the covariance of the store the model was trained on (``vlmforge.models.embedding_vlm.alignment``; an
extension beyond the paper, ``config.image_alignment = "covariance"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from vlmforge.errors import ConfigError
from vlmforge.models.embedding_vlm.alignment import DEFAULT_SHRINKAGE, covariance_alignment, shrunk_covariance

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def calibration_image_paths(source: str | Path, n: int | None = 256) -> list[Path]:
    """The first ``n`` images of a folder (sorted by name, searched recursively) or of a records file (their
    ``image`` fields, resolved against the file's folder)."""
    from vlmforge.data.records import read_records
    from vlmforge.data.validate import image_paths

    source = Path(source)
    if source.is_dir() and not any(source.glob("*.jsonl")) and not any(source.glob("*.parquet")):
        paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    elif source.exists():
        folder = source if source.is_dir() else source.parent
        paths = [p for where, record in read_records(source) for p in image_paths(record, folder, where)]
        paths = list(dict.fromkeys(paths))  # several records may share an image
    else:
        raise ConfigError(f"calibration images '{source}' do not exist (give an image folder or a records file)")
    if not paths:
        raise ConfigError(f"no images found in '{source}'")
    return paths[:n] if n else paths


@torch.no_grad()
def calibrate_image_mean(
    model,
    processor,
    images: Sequence[Image.Image],
    batch_size: int = 64,
    text_store: str | Path | None = None,
    shrinkage: float = DEFAULT_SHRINKAGE,
) -> torch.Tensor:
    """Set ``model.image_mean`` to the mean of the L2-normalised encoder embeddings of ``images``; returns it.

    With ``text_store`` (the EmbeddingStore folder the model was trained on) the covariance is aligned as well
    (``set_covariance_alignment``); without, the model goes back to centring only."""
    from vlmforge.models.embedding_vlm.transfer import compute_stats

    if model.vision_tower is None:
        raise ConfigError("this model has no image encoder to calibrate")
    if not images:
        raise ConfigError("calibration needs at least one image")
    from vlmforge.models.embedding_vlm.modeling import encode_images

    model.eval()
    embeddings = F.normalize(encode_images(model.vision_tower, processor.image_processor, images, batch_size), dim=-1)
    stats = compute_stats(embeddings)
    model.image_mean.copy_(stats.mean.to(model.image_mean.device, model.image_mean.dtype))
    model.config.image_mean_count = stats.n
    if text_store is not None:
        set_covariance_alignment(model, embeddings, text_store, shrinkage)
    elif "image_align" in model._buffers:  # a new mean invalidates a matrix computed around the old one
        del model._buffers["image_align"]
        model.config.image_alignment, model.config.image_alignment_shrinkage = "mean", None
    return stats.mean


def set_covariance_alignment(
    model, image_vectors: torch.Tensor, text_store: str | Path, shrinkage: float = DEFAULT_SHRINKAGE
) -> torch.Tensor:
    """Store in ``model.image_align`` the matrix that gives the calibration images' centred embeddings
    (``image_vectors``, L2-normalised) the covariance of ``text_store``'s rows; returns it."""
    from vlmforge.data.embedding_store import EmbeddingStore

    if len(image_vectors) < 2:
        raise ConfigError("covariance alignment needs at least 2 calibration images")
    store = EmbeddingStore.open(text_store)
    if store.dim != model.config.embed_dim:
        raise ConfigError(f"store '{text_store}' holds {store.dim}-d vectors; the model takes {model.config.embed_dim}")
    # The store is read in chunks of rows: a 1M x 1280 store does not have to fit in memory.
    matrix = covariance_alignment(
        shrunk_covariance(image_vectors, shrinkage), shrunk_covariance(store.array, shrinkage)
    )
    matrix = matrix.to(model.image_mean.device)
    if "image_align" in model._buffers:
        model.image_align.copy_(matrix)
    else:
        model.register_buffer("image_align", matrix, persistent=True)
    model.config.image_alignment, model.config.image_alignment_shrinkage = "covariance", shrinkage
    return matrix


def calibrate_checkpoint(
    model_dir: str | Path,
    images: str | Path,
    n: int = 256,
    out_dir: str | Path | None = None,
    text_store: str | Path | None = None,
    shrinkage: float = DEFAULT_SHRINKAGE,
) -> dict:
    """Load a saved embedding-input VLM, calibrate its image mean on ``images`` (and, with ``text_store``, its
    covariance alignment) and save it (in place by default)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vlmforge.data.images import load_image
    from vlmforge.models.embedding_vlm.configuration import MODEL_TYPE

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"model '{model_dir}' not found: expected a folder with config.json")
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    if model.config.model_type != MODEL_TYPE:
        raise ConfigError(
            f"'{model_dir}' is a {model.config.model_type} model; calibration is for embedding_vlm models"
        )
    processor = AutoProcessor.from_pretrained(model_dir)
    paths = calibration_image_paths(images, n)
    pictures = [load_image(p, str(p)) for p in paths]
    mean = calibrate_image_mean(model, processor, pictures, text_store=text_store, shrinkage=shrinkage)
    out = Path(out_dir) if out_dir else model_dir
    model.save_pretrained(out)
    if out != model_dir:
        processor.save_pretrained(out)
    return {"model": str(out), "images": len(paths), "mean_norm": float(mean.norm()),
            "alignment": model.config.image_alignment, "shrinkage": model.config.image_alignment_shrinkage}  # fmt: skip
