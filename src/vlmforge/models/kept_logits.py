"""Logits only where a label is: the LM head and the loss over the supervised positions alone.

A causal LM's loss reads the logits of the positions whose next token is a label. In instruction tuning most
positions are not: the image tokens, the system prompt and the questions. transformers' models take
``logits_to_keep`` and project only the positions it names onto the vocabulary, so training can skip the rest of
the LM head (a large share of the compute and of the activation memory with a vocabulary of 150k) and get the same
loss and gradients. transformers slices by a boolean mask [batch, length] (a different count per row: packed
rows); an older release that only takes a list of positions shared by all rows gets the union of the rows'
supervised positions instead.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch.nn import functional

IGNORE_INDEX = -100


@lru_cache(maxsize=1)
def _transformers_slicer():
    try:
        from transformers.modeling_utils import slice_logits_to_keep
    except ImportError:
        return None
    try:  # a boolean [1, 2] mask keeping one position gives one row of hidden states where masks are understood
        kept = slice_logits_to_keep(torch.zeros(1, 2, 1), torch.tensor([[True, False]]))
    except (IndexError, RuntimeError, TypeError):
        return None
    return slice_logits_to_keep if tuple(kept.shape) == (1, 1) else None


def masks_supported() -> bool:
    """Whether the installed transformers slices hidden states by a boolean mask."""
    return _transformers_slicer() is not None


def slice_hidden(hidden: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
    """``hidden`` [batch, length, dim] at the positions ``logits_to_keep`` names, as transformers' models slice it:
    an int keeps the last that many (0: all), a 1-D tensor those positions in every row, a boolean
    [batch, length] mask its True positions flattened to [kept, dim]."""
    slicer = _transformers_slicer()
    if slicer is not None:
        return slicer(hidden, logits_to_keep)
    if isinstance(logits_to_keep, int):
        return hidden[:, -logits_to_keep:, :] if logits_to_keep else hidden
    return hidden[:, logits_to_keep, :]


def shifted_labels(labels: torch.Tensor) -> torch.Tensor:
    """The label each position predicts: the next position's, and none for the last."""
    return functional.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:]


def supervised_positions(labels: torch.Tensor) -> torch.Tensor:
    """``logits_to_keep`` for a batch's labels: a boolean mask of the positions that predict a label, or, where
    masks are not supported, the positions that do so in any row."""
    targets = shifted_labels(labels) != IGNORE_INDEX
    return targets if masks_supported() else targets.any(0).nonzero().squeeze(1)


def head_positions(keep: torch.Tensor, rows: int) -> int:
    """How many positions the LM head computes over ``rows`` rows given ``supervised_positions``' ``keep``."""
    return int(keep.sum()) if keep.dtype == torch.bool else keep.numel() * rows


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """transformers' causal-LM loss (``ForCausalLMLoss``: a sum over the labels divided by ``num_items_in_batch``,
    else their mean) for logits of every position, or of the positions ``supervised_positions(labels)`` kept."""
    from transformers.loss.loss_utils import ForCausalLMLoss

    targets = shifted_labels(labels)
    if logits.dim() == 2 or logits.shape[1] != labels.shape[1]:
        keep = supervised_positions(labels)
        targets = targets[keep] if keep.dtype == torch.bool else targets[:, keep]
    return ForCausalLMLoss(
        logits, None, logits.shape[-1], num_items_in_batch=num_items_in_batch, shift_labels=targets.contiguous()
    )
