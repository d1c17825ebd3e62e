"""The box filter for grounded samples: drop boxes too small to crop, then score crop vs expression by cosine.

Any CLIP/SigLIP-family model scores (``AutoModel``'s ``get_image_features``/``get_text_features``). The released
code kept a sample when CLIP's raw dot product exceeded a fixed number, which only means something for that one
model; a cosine threshold calibrated on labeled data to a stated recall carries over to any scorer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from vlmforge.errors import ConfigError

# Tasks whose one box and one expression can be scored against each other, and where each sits.
SCORED_TASKS = {"rec": ("question", "answer"), "reg": ("answer", "question")}


@dataclass(frozen=True)
class MinSize:
    """A box's shorter side must reach ``pixels`` (in image pixels) or ``fraction`` (of the image's side)."""

    pixels: float = 0.0
    fraction: float = 0.0

    def too_small(self, box: Sequence[float], size: tuple[int, int]) -> bool:
        w, h = size
        bw, bh = (box[2] - box[0]), (box[3] - box[1])
        # The slack keeps a box exactly at the limit from failing on float rounding (0.3 - 0.1 < 0.2).
        return min(bw * w, bh * h) < self.pixels - 1e-6 or min(bw, bh) < self.fraction - 1e-9


def parse_min_size(text: str) -> MinSize:
    """``50px`` -> 50 pixels a side; ``0.05`` -> 5 % of the image's side."""
    text = text.strip().lower()
    try:
        return MinSize(pixels=float(text[:-2])) if text.endswith("px") else MinSize(fraction=float(text))
    except ValueError:
        raise ConfigError(f"--min-box {text!r}: give pixels ('50px') or a fraction of the image ('0.05')") from None


def crop(image: Image.Image, box: Sequence[float]) -> Image.Image:
    w, h = image.size
    return image.crop((round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h)))


def expression_and_box(record: dict[str, Any]) -> tuple[str, list[float]] | None:
    """The expression and the box of a REC/REG record; None for tasks without one of each."""
    where = SCORED_TASKS.get(record.get("task", ""))
    boxes = record.get("boxes") or []
    if where is None or len(boxes) != 1:
        return None
    turns = record["conversations"]
    text = turns[0]["value"] if where[0] == "question" else turns[1]["value"]
    return text.replace("<image>", "").strip(), boxes[0]


class ClipScorer:
    """Cosine between an image crop and a text, with any CLIP/SigLIP model folder or hub id."""

    def __init__(self, model_path: str, *, device: str | None = None, batch_size: int = 32):
        import torch
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.model = AutoModel.from_pretrained(model_path).to(self.device).eval()
            self.image_processor = AutoImageProcessor.from_pretrained(model_path)
            self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        except OSError as err:
            raise ConfigError(f"cannot load a CLIP-style scorer from {model_path!r}: {err}") from err
        if not hasattr(self.model, "get_image_features") or not hasattr(self.model, "get_text_features"):
            raise ConfigError(f"{model_path!r} is not a two-tower (CLIP/SigLIP) model")
        self.batch_size, self.name = batch_size, model_path
        # SigLIP pools its text at the last position and was trained on texts padded to a fixed length, so it
        # must see that padding; CLIP pools at the end-of-text token and takes the batch's longest.
        if "siglip" in str(getattr(self.model.config, "model_type", "")):
            length = self.model.config.text_config.max_position_embeddings
            self._padding = {"padding": "max_length", "max_length": length}
        else:
            self._padding = {"padding": True}

    @staticmethod
    def _features(out: Any) -> Any:
        return out if hasattr(out, "norm") else out.pooler_output

    def scores(self, crops: Sequence[Image.Image], texts: Sequence[str]) -> list[float]:
        import torch

        out: list[float] = []
        for s in range(0, len(crops), self.batch_size):
            pixels = self.image_processor(images=list(crops[s : s + self.batch_size]), return_tensors="pt")
            tokens = self.tokenizer(
                list(texts[s : s + self.batch_size]), truncation=True, return_tensors="pt", **self._padding
            )
            with torch.inference_mode():
                img = self._features(self.model.get_image_features(pixel_values=pixels["pixel_values"].to(self.device)))
                txt = self._features(self.model.get_text_features(**{k: v.to(self.device) for k, v in tokens.items()}))
            out += torch.nn.functional.cosine_similarity(img.float(), txt.float(), dim=-1).tolist()
        return out


def calibrate_threshold(
    positive: Sequence[float], recall: float, negative: Sequence[float] = ()
) -> dict[str, float | int]:
    """The highest threshold that keeps at least ``recall`` of the correct samples' scores (``score >= t``);
    with negatives (wrong pairs), also the share of them it still lets through."""
    if not positive:
        raise ConfigError("calibration needs labeled samples with a box and an expression; none were found")
    if not 0.0 < recall <= 1.0:
        raise ConfigError(f"--recall must be in (0, 1], got {recall}")
    ranked = sorted(positive, reverse=True)
    k = math.ceil(recall * len(ranked) - 1e-9)
    threshold = ranked[k - 1]
    result: dict[str, float | int] = {
        "threshold": threshold,
        "target_recall": recall,
        "recall": sum(s >= threshold for s in positive) / len(positive),
        "n_positive": len(positive),
    }
    if negative:
        result["negative_pass_rate"] = sum(s >= threshold for s in negative) / len(negative)
        result["n_negative"] = len(negative)
    return result
