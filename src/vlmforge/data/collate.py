"""Batch encoded samples: right padding to the longest sample, labels -100 on padding."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlmforge.data.chat import IGNORE_INDEX


def stack_pixel_values(samples: list[dict]) -> torch.Tensor | None:
    """All images of the batch, in sample order: LLaVA fills its image tokens with image features in that order."""
    images = [s["pixel_values"] for s in samples if s.get("pixel_values") is not None]
    return torch.cat(images) if images else None


def as_long(values) -> torch.Tensor:
    return values if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=torch.long)


@dataclass
class PaddingCollator:
    """``list of {"input_ids", "labels", "pixel_values"?}`` -> a padded batch with ``attention_mask``.

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
        pixel_values = stack_pixel_values(samples)
        if pixel_values is not None:
            batch["pixel_values"] = pixel_values
        return batch
