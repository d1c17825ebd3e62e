"""Which batching a stage uses: a cost model over the stage's lengths, and ``auto``'s choice.

Each mode is simulated on the stage's own sample lengths, with the batches it would really form:

- ``padding``: random batches of ``per_device_batch_size`` samples, each padded to its longest sample;
- ``length_grouped``: the batches of :func:`vlmforge.data.length_grouping.length_grouped_order`;
- ``packing``: random batches whose samples are packed into rows (``BatchPackingCollator``), for several row
  lengths (multiples of 64 from the longest sample up); the cheapest row length is the one used.

A batch costs the model FLOPs of :mod:`vlmforge.train.flops` for every position computed, with attention counted
the way the attention implementation computes it: sdpa and eager score every (query, key) pair of a row when a
mask is given (padding, and the block-diagonal mask of packed rows), so a row costs its length squared; the
flash-attention kernels drop padding and skip the blocks between packed samples, so a sample costs only its own
causal pairs. ``auto`` takes the cheapest mode; another mode than padding must be clearly cheaper, because it
changes the order or the layout the data is seen in for too small a gain.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vlmforge.data.length_grouping import length_grouped_order
from vlmforge.data.packing import pack_samples
from vlmforge.train.flops import FlopModel

MODES = ("padding", "length_grouped", "packing")
# auto keeps padding unless another mode is predicted cheaper than this fraction of padding's cost.
SWITCH_BELOW = 0.95
ROW_MULTIPLE = 64
ROW_CANDIDATES = (1, 2, 3, 4, 6, 8)  # row lengths tried, as multiples of the first one that fits every sample
SIMULATED_SAMPLES = 20_000  # a seeded subsample of longer data sets: the histogram is what matters


@dataclass(frozen=True)
class Prediction:
    real_token_fraction: float
    cost_per_sample: float  # model FLOPs as the attention implementation computes them
    row_length: int | None = None


@dataclass
class BatchingPlan:
    mode: str  # padding | length_grouped | packing
    requested: str  # what the recipe said (auto or a mode)
    attention: str  # dense | varlen: how the attention implementation in use computes masked rows
    row_length: int | None  # packing's row length
    predictions: dict[str, Prediction] = field(default_factory=dict)

    def manifest(self) -> dict[str, Any]:
        chosen = self.predictions.get(self.mode)
        return {
            "mode": self.mode,
            "requested": self.requested,
            "attention": self.attention,
            "row_length": self.row_length,
            "predicted_real_token_fraction": chosen.real_token_fraction if chosen else None,
            "predicted_cost_per_sample": chosen.cost_per_sample if chosen else None,
            "predictions": {mode: vars(p) for mode, p in self.predictions.items()},
        }

    def log_line(self, stage: str) -> str:
        how = "auto" if self.requested == "auto" else "recipe"
        if self.mode not in self.predictions:  # nothing to predict from (no samples)
            return f"[{stage}] batching: {self.mode} ({how})"
        chosen = self.predictions[self.mode]
        others = ", ".join(
            f"{mode} {p.real_token_fraction:.2f}, {p.cost_per_sample / 1e6:.3g}"
            for mode, p in self.predictions.items()
            if mode != self.mode
        )
        row = f", rows of {self.row_length} tokens" if self.mode == "packing" else ""
        return (
            f"[{stage}] batching: {self.mode} ({how}{row}; predicted real-token fraction "
            f"{chosen.real_token_fraction:.2f}, {chosen.cost_per_sample / 1e6:.3g} MFLOP per sample; {others})"
        )


def attention_kind(attn_implementation: str | None) -> str:
    """``varlen`` for the flash-attention kernels, which skip padding and the blocks between packed samples;
    ``dense`` for everything that takes a mask (sdpa, eager, FlexAttention on CPU)."""
    return "varlen" if (attn_implementation or "").startswith("flash_attention") else "dense"


def _pairs(length: int, attention: str) -> float:
    return length * (length + 1) / 2 if attention == "varlen" else float(length * length)


def _padded_batch(lengths: Sequence[int], flops: FlopModel, attention: str) -> tuple[int, float]:
    longest = max(lengths)
    pairs = (
        sum(_pairs(n, attention) for n in lengths)
        if attention == "varlen"
        else len(lengths) * _pairs(longest, attention)
    )
    return len(lengths) * longest, flops.per_token * len(lengths) * longest + flops.per_pair * pairs


def _packed_batch(lengths: Sequence[int], row: int, flops: FlopModel, attention: str) -> tuple[int, float]:
    bins = pack_samples(list(lengths), row)
    longest = max(sum(lengths[i] for i in b) for b in bins)  # the collator pads rows to the longest row
    if attention == "varlen":
        pairs = sum(_pairs(n, attention) for n in lengths)
    else:
        pairs = len(bins) * _pairs(longest, attention)
    return len(bins) * longest, flops.per_token * len(bins) * longest + flops.per_pair * pairs


def _simulate(batches: list[list[int]], cost_of, flops: FlopModel, images: float) -> Prediction:
    computed, cost, real, samples = 0, 0.0, 0, 0
    for batch in batches:
        tokens, flop = cost_of(batch)
        computed, cost, real, samples = computed + tokens, cost + flop, real + sum(batch), samples + len(batch)
    return Prediction(real / max(computed, 1), (cost + flops.per_image * images) / max(samples, 1))


def _chunks(values: list[int], size: int) -> list[list[int]]:
    return [values[start : start + size] for start in range(0, len(values), size)]


def predict(
    lengths: Sequence[int], batch_size: int, flops: FlopModel, attention: str, images: int = 0, seed: int = 0
) -> dict[str, Prediction]:
    """Predicted real-token fraction and cost per sample of each mode (packing at its cheapest row length) for
    samples of ``lengths`` in batches of ``batch_size``; ``images`` is how many images the samples hold."""
    lengths = list(lengths)
    if len(lengths) > SIMULATED_SAMPLES:
        images = round(images * SIMULATED_SAMPLES / len(lengths))
        lengths = random.Random(seed).sample(lengths, SIMULATED_SAMPLES)
    shuffled = random.Random(seed).sample(lengths, len(lengths))
    random_batches = _chunks(shuffled, batch_size)
    grouped = [lengths[i] for i in length_grouped_order(lengths, batch_size, seed)]
    result = {
        "padding": _simulate(random_batches, lambda b: _padded_batch(b, flops, attention), flops, images),
        "length_grouped": _simulate(
            _chunks(grouped, batch_size), lambda b: _padded_batch(b, flops, attention), flops, images
        ),
    }
    first = -(-max(lengths) // ROW_MULTIPLE) * ROW_MULTIPLE
    packed = []
    for multiple in ROW_CANDIDATES:
        row = first * multiple
        p = _simulate(random_batches, lambda b, row=row: _packed_batch(b, row, flops, attention), flops, images)
        packed.append(Prediction(p.real_token_fraction, p.cost_per_sample, row))
    result["packing"] = min(packed, key=lambda p: p.cost_per_sample)
    return result


def plan_batching(
    requested: str,
    lengths: Sequence[int],
    batch_size: int,
    flops: FlopModel,
    attn_implementation: str | None,
    images: int = 0,
    seed: int = 0,
) -> BatchingPlan:
    """The stage's batching: ``requested`` itself, or for ``auto`` the mode predicted cheapest."""
    attention = attention_kind(attn_implementation)
    predictions = predict(lengths, batch_size, flops, attention, images, seed) if lengths else {}
    if requested != "auto":
        mode = requested
    elif not predictions:
        mode = "padding"
    else:
        best = min(MODES, key=lambda m: predictions[m].cost_per_sample)
        padding = predictions["padding"].cost_per_sample
        mode = best if predictions[best].cost_per_sample < SWITCH_BELOW * padding else "padding"
    row = predictions["packing"].row_length if predictions else None
    return BatchingPlan(mode, requested, attention, row, predictions)
