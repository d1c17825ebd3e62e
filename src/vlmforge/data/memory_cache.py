"""Processed samples kept in memory between epochs, up to a byte budget.

A stage that makes many passes over a few thousand records would decode and preprocess each image, and render and
tokenise each conversation, again every epoch, in the training process itself (stages run no DataLoader workers by
default); on a CPU that is a large share of a step. Both are deterministic (LLaVA image processors apply no random
augmentation; a record's rewording is drawn once), so the results can be kept and reused as they are. A cache
fills in the order keys are first read and then stops growing: with a data set larger than the budget, a fixed
share of it hits, without the churn of evicting.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

import torch

Value = TypeVar("Value", torch.Tensor, tuple[torch.Tensor, ...])


def _bytes(value: torch.Tensor | tuple[torch.Tensor, ...]) -> int:
    tensors = value if isinstance(value, tuple) else (value,)
    return sum(t.element_size() * t.nelement() for t in tensors)


class MemoryCache:
    """``get(key, load)``: the cached value (a tensor or a tuple of tensors) for ``key``, else ``load()``, kept
    while the budget allows. Callers must not modify a returned value in place: it is the kept one."""

    def __init__(self, max_bytes: int, what: str = "cache"):
        if max_bytes < 0:
            raise ValueError(f"the {what}'s budget must be >= 0 bytes, got {max_bytes}")
        self.max_bytes, self.used = max_bytes, 0
        self._kept: dict[Hashable, torch.Tensor | tuple[torch.Tensor, ...]] = {}

    def get(self, key: Hashable, load: Callable[[], Value]) -> Value:
        kept = self._kept.get(key)
        if kept is not None:
            return kept
        value = load()
        size = _bytes(value)
        if self.used + size <= self.max_bytes:
            self._kept[key] = value
            self.used += size
        return value

    def clear(self) -> None:
        self._kept.clear()
        self.used = 0
