"""The KV cache of the unified model: one slot per LM layer, one more per vision copy, and each token's modality.

The split layers' two copies each keep keys and values for every position (the vision copy's slots sit after
the LM's layers), and the masks read which positions are vision from ``vision``, so a decode step that passes
only its new token still masks the cached ones by modality.
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
