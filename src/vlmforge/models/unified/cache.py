"""The KV cache of the unified model: one slot per LM layer, one more per vision copy, and each token's modality.

The split layers' two copies each keep keys and values for every position (the vision copy's slots sit after
the LM's layers), and the masks read which positions are vision from ``vision``, so a decode step that passes
only its new token still masks the cached ones by modality. Every operation that reorders, repeats or shortens
the cached positions (beam search, assisted decoding) applies to ``vision`` too.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache


class UnifiedCache(DynamicCache):
    """A ``DynamicCache`` with lazily added layer slots plus the modality of every cached position."""

    def __init__(self):
        super().__init__()
        self.vision: torch.Tensor | None = None  # [batch, cached positions], True for vision tokens

    def extend_modality(self, vision: torch.Tensor) -> torch.Tensor:
        """Record the modality of the positions being added; returns the modality of all positions."""
        self.vision = vision if self.vision is None else torch.cat([self.vision, vision], dim=1)
        return self.vision

    def reset(self) -> None:
        super().reset()
        self.vision = None

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        if self.vision is not None:
            self.vision = self.vision.index_select(0, beam_idx.to(self.vision.device))

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        if self.vision is not None:
            self.vision = self.vision[:, : self.get_seq_length()]

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        if self.vision is not None:
            self.vision = self.vision.repeat_interleave(repeats, dim=0)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        if self.vision is not None:
            self.vision = self.vision[indices]
