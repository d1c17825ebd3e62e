"""Processed images kept in memory between epochs, up to a byte budget.

A stage that makes many passes over a few thousand images would decode and preprocess each of them again every
epoch, in the training process itself (stages run no DataLoader workers by default), and on a CPU that is a large
share of a step. LLaVA image processors are deterministic (no random augmentation), so an image's pixel values can
be kept and reused as they are. The cache fills in the order images are first read and then stops growing: with a
data set larger than the budget, a fixed share of it hits, without the churn of evicting.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch


class PixelCache:
    """``get(key, load)``: the cached tensor for ``key``, else ``load()``, kept while the budget allows."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"the image cache's budget must be >= 0 bytes, got {max_bytes}")
        self.max_bytes, self.used = max_bytes, 0
        self._kept: dict[Hashable, torch.Tensor] = {}

    def get(self, key: Hashable, load: Callable[[], torch.Tensor]) -> torch.Tensor:
        kept = self._kept.get(key)
        if kept is not None:
            return kept
        value = load()
        size = value.element_size() * value.nelement()
        if self.used + size <= self.max_bytes:
            self._kept[key] = value
            self.used += size
        return value
