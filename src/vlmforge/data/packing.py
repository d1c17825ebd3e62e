"""Sequence packing: several samples per row, each attending only to itself.

Samples of one bin are concatenated with ``position_ids`` restarting at 0 per sample and no ``attention_mask``;
transformers (5.x) then derives a block-diagonal causal mask from the position resets, so each packed sample gets
exactly the logits it would get alone. The first label of each sample is set to -100 (it is never predicted on
its own either), so the loss over a row equals the token-weighted loss of its samples.

transformers derives that mask only when the language model runs without a KV cache: with one it builds a plain
causal mask and packed samples attend to each other. Call :func:`disable_kv_cache` on a model before training it on
packed rows.

Attention over a packed row: on GPU, flash-attention's varlen kernels (``attn_implementation="flash_attention_2"``)
read the samples from ``position_ids`` and skip the blocks between them. On CPU the block-diagonal mask goes to
sdpa as a dense mask. We measured the alternatives there (``bench/packed_attention.py``): FlexAttention has no
backward pass on CPU in torch 2.13; one causal sdpa call per sample beats the dense mask only on long rows, and
short rows with the dense mask beat both, since many small calls cost more per score; regrouping each row's
samples into a batch of their own moves more memory than the skipped blocks save. So the dense mask stays, and
packing keeps its rows short instead (:class:`BatchPackingCollator` with a row length chosen from the data).

Which samples of a micro-batch share a row is one cost rule, :func:`pack_layout`, that the collator and the
batching planner's simulation (``vlmforge.train.batching``) both call. A layout is a list of rows of sample
indices, every row padded to the longest row; :class:`LayoutCost` prices it as the model's work per position
computed plus its work per attention (query, key) pair scored, with pairs counted as the attention implementation
scores them: ``dense`` (sdpa, eager: any kernel given a mask) scores every pair of a row, padding and the blocks
between packed samples included; ``varlen`` (flash-attention's kernels) only each sample's own causal pairs.
Padding's layout (each sample alone) is kept unless packing is predicted strictly cheaper, so a packed micro-batch
never costs more than the padded one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import DataCollatorWithFlattening, PreTrainedConfig

from vlmforge.data.chat import IGNORE_INDEX
from vlmforge.data.collate import PaddingCollator, stack_image_inputs
from vlmforge.data.dataset import ConversationDataset
from vlmforge.errors import ConfigError, DataError


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


ATTENTION_KINDS = ("dense", "varlen")


@dataclass(frozen=True)
class LayoutCost:
    """What a batch layout costs: ``per_token`` per position computed, ``per_pair`` per attention pair scored,
    ``attention`` how pairs are scored (``dense`` or ``varlen``, see the module)."""

    per_token: float
    per_pair: float
    attention: str = "dense"

    def __post_init__(self):
        if self.attention not in ATTENTION_KINDS:
            raise ConfigError(f"attention must be one of {', '.join(ATTENTION_KINDS)}, not {self.attention!r}")
        if self.per_token < 0 or self.per_pair < 0:
            raise ConfigError(f"negative layout cost: per_token={self.per_token}, per_pair={self.per_pair}")

    def of(self, rows: Sequence[Sequence[int]]) -> tuple[int, float]:
        """Positions computed and cost of a batch whose rows hold samples of these lengths."""
        width = max(sum(row) for row in rows)
        positions = len(rows) * width
        if self.attention == "varlen":
            pairs = sum(n * (n + 1) / 2 for row in rows for n in row)
        else:
            pairs = float(positions * width)
        return positions, self.per_token * positions + self.per_pair * pairs


def pack_layout(lengths: Sequence[int], row_length: int, cost: LayoutCost | None) -> list[list[int]]:
    """The rows of one micro-batch of samples of ``lengths``: sample indices, ascending within a row.

    Candidates are padding's layout (each sample alone) and first-fit-decreasing packings into rows of at most
    the batch's longest sample and of at most ``row_length`` tokens; the cheapest under ``cost`` wins, padding's
    on a tie. Without a ``cost`` the samples are packed into rows of ``row_length``, as asked.
    """
    lengths = list(lengths)
    if not lengths:
        return []
    if cost is None:
        return [sorted(row) for row in pack_samples(lengths, row_length)]
    best = [[index] for index in range(len(lengths))]
    best_cost = cost.of([[n] for n in lengths])[1]
    for cap in dict.fromkeys((max(lengths), row_length)):
        rows = pack_samples(lengths, cap)
        if len(rows) == len(lengths):  # nothing merged: padding's layout, already the candidate
            continue
        candidate = cost.of([[lengths[i] for i in row] for row in rows])[1]
        if candidate < best_cost:
            best, best_cost = [sorted(row) for row in rows], candidate
    return best


def disable_kv_cache(model: torch.nn.Module) -> Callable[[], None]:
    """Set ``use_cache=False`` on the model's config and on every sub-config (text, vision, ...) of every module;
    returns a function that puts the old values back (before saving the model, say).

    Setting it on the top-level config alone is not enough: the language model inside a LLaVA reads its own
    text config, makes a cache, and with a cache transformers ignores the position resets of packed rows."""
    seen: set[int] = set()
    before: list[tuple[PreTrainedConfig, Any]] = []

    def visit(config: PreTrainedConfig) -> None:
        if id(config) in seen:
            return
        seen.add(id(config))
        before.append((config, getattr(config, "use_cache", None)))
        config.use_cache = False
        for value in vars(config).values():
            if isinstance(value, PreTrainedConfig):
                visit(value)

    for module in model.modules():
        if isinstance(getattr(module, "config", None), PreTrainedConfig):
            visit(module.config)

    def restore() -> None:
        for config, value in before:
            config.use_cache = value

    return restore


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


@dataclass
class BatchPackingCollator:
    """Packs one micro-batch: ``list of samples`` -> the rows :func:`pack_layout` picks (rows of at most
    ``row_length`` tokens, padded to the batch's longest row), collated by :class:`PackingCollator`; a batch where
    no sample shares a row is collated by :class:`PaddingCollator`, exactly as padding would.

    Packing each batch, instead of the data set once, keeps the sampler's batches: the same samples meet in one
    optimizer step as with padding, so packing changes how fast a step runs, not what it computes. With a ``cost``
    samples share a row only where that is predicted cheaper; without one every batch is packed."""

    pad_token_id: int
    row_length: int
    cost: LayoutCost | None = None

    def __post_init__(self):
        self._rows = PackingCollator(self.pad_token_id)
        self._padded = PaddingCollator(self.pad_token_id)

    def __call__(self, samples: list[dict | None]) -> dict[str, torch.Tensor]:
        samples = [s for s in samples if s is not None]
        if not samples:
            raise ValueError("every sample of this batch was skipped; nothing to collate")
        rows = pack_layout([len(s["input_ids"]) for s in samples], self.row_length, self.cost)
        if len(rows) == len(samples):  # no sample shares a row: padding's batch, at padding's cost
            return self._padded(samples)
        return self._rows([[samples[i] for i in row] for row in rows])
