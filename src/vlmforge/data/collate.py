"""Batch encoded samples: right padding to the longest sample, labels -100 on padding."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlmforge.data.chat import IGNORE_INDEX

# Per-image model inputs: processed pixels, or precomputed image embeddings (the embedding-input VLM).
IMAGE_INPUT_KEYS = ("pixel_values", "image_embeds")


def stack_image_inputs(samples: list[dict]) -> dict[str, torch.Tensor]:
    """All images of the batch per input kind, in sample order: the model fills its image tokens in that order."""
    batch = {}
    for key in IMAGE_INPUT_KEYS:
        parts = [s[key] for s in samples if s.get(key) is not None]
        if parts:
            batch[key] = torch.cat(parts)
    return batch


def as_long(values) -> torch.Tensor:
    return values if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=torch.long)


@dataclass
class PaddingCollator:
    """``list of {"input_ids", "labels", "pixel_values"? / "image_embeds"?}`` -> a padded batch with ``attention_mask``.

    ``None`` items (records a dataset skipped with ``on_error="skip"``) are dropped.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, samples: list[dict | None]) -> dict[str, torch.Tensor]:
        samples = [s for s in samples if s is not None]
        if not samples:
            raise ValueError("every sample of this batch was skipped; nothing to collate")
        length = max(len(s["input_ids"]) for s in samples)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(samples), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), length), dtype=torch.long)
        for row, sample in enumerate(samples):
            n = len(sample["input_ids"])
            input_ids[row, :n] = as_long(sample["input_ids"])
            labels[row, :n] = as_long(sample["labels"])
            attention_mask[row, :n] = 1
        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        return {**batch, **stack_image_inputs(samples)}
