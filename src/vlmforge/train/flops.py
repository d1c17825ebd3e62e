"""How training speed is counted: model FLOPs of a batch, real tokens, and a measured matmul peak.

``bench/train_throughput.py`` and every stage's manifest count with these functions, so their numbers compare.

- Model FLOPs: 6 per LM weight per computed position (forward and backward; the LM's input embedding is a lookup),
  6 per output-head weight per position the head computes (in training only the supervised ones:
  vlmforge.models.kept_logits), 2 per vision-tower weight per patch (forward only: it is frozen or its input needs no
  gradient), 6 per projector weight per image token, and for attention 12 x hidden size x layers per
  (query, key) pair that causal attention needs: within each sample of a packed row, within the whole row of a
  padded batch (padding included, as it is computed).
- Real tokens: the samples' own tokens, without padding.
- Peak: the best time of a square float32 matmul, the machine's practical rate for dense work.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from vlmforge.models.architectures import model_parts


@dataclass(frozen=True)
class FlopModel:
    per_token: float  # per LM position computed, forward and backward, the output head left out
    per_pair: float  # per attention (query, key) pair, forward and backward
    per_image: float  # vision tower forward and projector forward and backward, per image
    per_head: float = 0.0  # per position the output head computes, forward and backward

    def pairs(self, rows: int, length: int) -> float:
        """Causal (query, key) pairs of ``rows`` sequences of ``length`` tokens."""
        return rows * length * (length + 1) / 2


def _params(module: torch.nn.Module | None) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def flop_model(model: torch.nn.Module) -> FlopModel:
    """The FLOP coefficients of a vlmforge model (or a PEFT wrapper of one), from its parts' sizes."""
    parts = model_parts(model)
    embeddings = parts.language_model.get_input_embeddings()
    lm = _params(parts.language_model) - _params(embeddings)
    text = model.config.get_text_config()
    image_tokens = getattr(model.config, "image_seq_length", None) or getattr(model.config, "num_visual_tokens", 1)
    vision = 2 * _params(parts.encoder) * (image_tokens + 1) if hasattr(model.config, "vision_config") else 0
    return FlopModel(
        per_token=6.0 * lm,
        per_pair=12.0 * text.hidden_size * text.num_hidden_layers,
        per_image=vision + 6.0 * _params(parts.projector) * image_tokens,
        per_head=6.0 * parts.lm_head.weight.numel(),
    )


def segment_lengths(position_ids: torch.Tensor) -> list[int]:
    """Lengths of the samples of packed rows, split where the position restarts at 0 (and at every row start)."""
    starts = position_ids == 0
    starts[:, 0] = True
    lengths = []
    for row in starts:
        edges = torch.nonzero(row).flatten().tolist() + [row.numel()]
        lengths += [b - a for a, b in zip(edges, edges[1:], strict=False)]
    return lengths


def batch_flops(model: FlopModel, batch: Mapping[str, torch.Tensor], head_positions: int | None = None) -> float:
    """Model FLOPs of one training forward and backward pass over ``batch`` (padded or packed), with the output
    head on ``head_positions`` positions (default: all)."""
    rows, length = batch["input_ids"].shape
    if "position_ids" in batch and "attention_mask" not in batch:
        pairs = sum(s * (s + 1) / 2 for s in segment_lengths(batch["position_ids"]))
    else:
        pairs = model.pairs(rows, length)
    images = sum(batch[k].shape[0] for k in ("pixel_values", "image_embeds") if k in batch)
    head = rows * length if head_positions is None else head_positions
    return model.per_token * rows * length + model.per_head * head + model.per_pair * pairs + model.per_image * images


def matmul_peak(size: int = 1024, repeats: int = 10) -> float:
    """FLOP/s of the fastest of ``repeats`` square float32 matmuls (about a tenth of a second on a laptop)."""
    generator = torch.Generator().manual_seed(0)  # its own, so that timing leaves the training's RNG untouched
    a, b = torch.randn(size, size, generator=generator), torch.randn(size, size, generator=generator)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best
