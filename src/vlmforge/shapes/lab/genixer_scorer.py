"""The shapes lab's box scorer: the foundation vision tower and all-MiniLM-L6-v2, the pair it was aligned with.

The tower's pooled ``image_embeds`` live in MiniLM's sentence space (shapes/foundation/vision.py), so together
they are a CLIP-style two-tower model; this scores crop vs expression by cosine behind the same ``scores`` call as
``synth.genixer.boxfilter.ClipScorer``, which the core's filter stage takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image


class FoundationScorer:
    """Cosine between a crop's pooled embedding (the foundation vision tower) and a text's MiniLM embedding.
    ``text_model``: any object with SentenceTransformer's ``encode`` (default: the frozen MiniLM)."""

    def __init__(self, vision_dir: str | Path, *, text_model: Any = None, batch_size: int = 64):
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        from vlmforge.errors import ConfigError
        from vlmforge.shapes.foundation.vision import load_text_encoder

        try:
            self.model = CLIPVisionModelWithProjection.from_pretrained(vision_dir).eval()
            self.processor = CLIPImageProcessor.from_pretrained(vision_dir)
        except OSError as err:
            raise ConfigError(f"cannot load the foundation vision tower from {vision_dir}: {err}") from err
        self.text_model = text_model if text_model is not None else load_text_encoder()
        self.batch_size = batch_size
        self.name = f"foundation:{vision_dir}+all-MiniLM-L6-v2"

    def scores(self, crops: Sequence[Image.Image], texts: Sequence[str]) -> list[float]:
        from vlmforge.shapes.foundation.vision import embed_texts, image_embeddings, pixel_values

        if not crops:
            return []
        images = image_embeddings(self.model, pixel_values(self.processor, list(crops)), batch=self.batch_size)
        words = embed_texts(list(texts), self.text_model, batch_size=self.batch_size)
        return (images * words).sum(-1).tolist()  # both L2-normalised: the dot product is the cosine
