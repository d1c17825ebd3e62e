"""Sequence packing: several samples per row, each attending only to itself.

Samples of one bin are concatenated with ``position_ids`` restarting at 0 per sample and no ``attention_mask``;
transformers (5.x) then derives a block-diagonal causal mask from the position resets, so each packed sample gets
exactly the logits it would get alone. The first label of each sample is set to -100 (it is never predicted on
its own either), so the loss over a row equals the token-weighted loss of its samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset
from transformers import DataCollatorWithFlattening

from vlmforge.data.chat import IGNORE_INDEX
from vlmforge.data.collate import stack_image_inputs
from vlmforge.data.dataset import ConversationDataset
from vlmforge.errors import DataError


def pack_samples(lengths: list[int], max_length: int) -> list[list[int]]:
    """First-fit-decreasing bin packing of sample indices into bins of at most ``max_length`` tokens.

    A max-segment tree over the bins' free space finds the first bin that fits in O(log n), so a million samples
    pack in seconds. Unopened bins have full capacity and lie right of every opened one, so "first bin that
    fits" is exactly first fit.
    """
    for index, length in enumerate(lengths):
        if length > max_length:
            raise DataError(f"sample #{index}", f"{length} tokens, over max_length={max_length}", code="too_long")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    size = 1
    while size < max(len(lengths), 1):
        size *= 2
    free = [max_length] * (2 * size)  # free[size + b] = free tokens in bin b; inner nodes hold the max below
    bins: list[list[int]] = []
    for index in order:
        need, node = lengths[index], 1
        while node < size:  # descend to the leftmost leaf with enough room
            node = 2 * node if free[2 * node] >= need else 2 * node + 1
        leaf = node - size
        if leaf == len(bins):
            bins.append([])
        bins[leaf].append(index)
        free[node] -= need
        node //= 2
        while node:
            free[node] = max(free[2 * node], free[2 * node + 1])
            node //= 2
    return bins


def packing_stats(bins: list[list[int]], lengths: list[int], max_length: int) -> dict[str, float]:
    """How full the packed rows are: ``real_token_fraction`` = real tokens / (rows x max_length)."""
    real = sum(lengths[i] for b in bins for i in b)
    return {
        "samples": sum(len(b) for b in bins),
        "rows": len(bins),
        "real_tokens": real,
        "real_token_fraction": real / (len(bins) * max_length) if bins else 0.0,
    }


class PackedDataset(Dataset):
    """Rows of a :class:`ConversationDataset` packed by :func:`pack_samples`; item ``i`` is the list of samples of
    row ``i`` (use :class:`PackingCollator`). Encodes every record once up front to learn the lengths."""

    def __init__(self, dataset: ConversationDataset, max_length: int | None = None):
        self.dataset = dataset
        self.max_length = max_length or dataset.max_length
        self.lengths = dataset.compute_lengths()
        self.bins = pack_samples(self.lengths, self.max_length)

    def __len__(self) -> int:
        return len(self.bins)

    def __getitem__(self, index: int) -> list[dict]:
        return [s for s in (self.dataset[i] for i in self.bins[index]) if s is not None]

    def stats(self) -> dict[str, float]:
        return packing_stats(self.bins, self.lengths, self.max_length)


@dataclass
class PackingCollator:
    """``list of rows (lists of samples)`` -> ``input_ids``, ``labels``, ``position_ids`` (and image inputs),
    no ``attention_mask``. Rows shorter than ``row_length`` (default: the longest row of the batch) end with a
    padding segment of its own (positions from 0, labels -100), which no real token attends to."""

    pad_token_id: int
    row_length: int | None = None

    def __post_init__(self):
        self._flatten = DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)

    def __call__(self, rows: list[list[dict]]) -> dict[str, torch.Tensor]:
        rows = [[s for s in row if s is not None] for row in rows]
        rows = [row for row in rows if row]
        if not rows:
            raise ValueError("every sample of this batch was skipped; nothing to collate")
        flat = [self._flatten([{"input_ids": s["input_ids"], "labels": s["labels"]} for s in row]) for row in rows]
        longest = max(f["input_ids"].shape[1] for f in flat)
        length = self.row_length or longest
        if longest > length:
            raise ValueError(f"a packed row holds {longest} tokens, more than row_length={length}")
        batch = {
            "input_ids": torch.full((len(rows), length), self.pad_token_id, dtype=torch.long),
            "labels": torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long),
            "position_ids": torch.zeros((len(rows), length), dtype=torch.long),
        }
        for index, row in enumerate(flat):
            n = row["input_ids"].shape[1]
            for key in ("input_ids", "labels", "position_ids"):
                batch[key][index, :n] = row[key][0]
            batch["position_ids"][index, n:] = torch.arange(length - n)
        return {**batch, **stack_image_inputs([s for row in rows for s in row])}
