"""Which batching a stage uses: a cost model over the stage's lengths, and ``auto``'s choice.

Each mode is simulated on the stage's own sample lengths, with the batches it would really form:

- ``padding``: random batches of ``per_device_batch_size`` samples, each padded to its longest sample;
- ``length_grouped``: the batches of :func:`vlmforge.data.length_grouping.length_grouped_order`;
- ``packing``: random batches laid out in rows as ``BatchPackingCollator`` lays them out, by the same rule
  (:func:`vlmforge.data.packing.pack_layout`: samples share a row only where that is predicted cheaper than
  padding), for several row lengths (multiples of 64 from the longest sample up); the cheapest row length is the
  one used. A packing prediction is therefore never costlier than padding's.

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
from vlmforge.data.packing import BatchPackingCollator, LayoutCost, pack_layout
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
    cost: LayoutCost | None = None  # the packing collator's cost rule; None: pack every batch

    def packing_collator(self, pad_token_id: int, max_length: int) -> BatchPackingCollator:
        """The collator of ``batching: packing``, deciding per micro-batch with the cost rule this plan assumed."""
        return BatchPackingCollator(pad_token_id, self.row_length or max_length, self.cost)

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


def layout_cost(flops: FlopModel, attention: str) -> LayoutCost:
    """The collator's cost rule for a model of ``flops`` under the ``attention`` kind (see :func:`attention_kind`)."""
    return LayoutCost(flops.per_token, flops.per_pair, attention)


def padded_batch(lengths: Sequence[int], cost: LayoutCost) -> tuple[int, float]:
    """Positions computed and cost of a padded micro-batch: every sample in a row of its own."""
    return cost.of([[n] for n in lengths])


def packed_batch(lengths: Sequence[int], row_length: int, cost: LayoutCost) -> tuple[int, float]:
    """Positions computed and cost of the micro-batch ``BatchPackingCollator`` makes of samples of ``lengths``:
    the rows its own rule, :func:`vlmforge.data.packing.pack_layout`, picks."""
    return cost.of([[lengths[i] for i in row] for row in pack_layout(lengths, row_length, cost)])


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
    cost = layout_cost(flops, attention)
    result = {
        "padding": _simulate(random_batches, lambda b: padded_batch(b, cost), flops, images),
        "length_grouped": _simulate(_chunks(grouped, batch_size), lambda b: padded_batch(b, cost), flops, images),
    }
    first = -(-max(lengths) // ROW_MULTIPLE) * ROW_MULTIPLE
    packed = []
    for multiple in ROW_CANDIDATES:
        row = first * multiple
        p = _simulate(random_batches, lambda b, row=row: packed_batch(b, row, cost), flops, images)
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
    return BatchingPlan(mode, requested, attention, row, predictions, layout_cost(flops, attention))
