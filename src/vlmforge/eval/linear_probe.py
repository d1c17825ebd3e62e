"""A linear probe: logistic regression on fixed feature vectors, fitted by full-batch Adam.

Shared by the readout ceiling of `vlmforge probe` (vlmforge.eval.probe) and the shapes lab's cross-modal transfer
probe. Written here so that neither needs scikit-learn: a few hundred steps on a few thousand vectors take about a
second.
"""

from __future__ import annotations

from functools import partial

import torch

PROBE_STEPS = 400
PROBE_LR = 0.05
PROBE_WEIGHT_DECAY = 1e-4


def fit_linear_probe(
    x: torch.Tensor, y: torch.Tensor, multilabel: bool, seed: int = 0, steps: int = PROBE_STEPS
) -> torch.nn.Linear:
    """A linear layer fitted to ``x`` [N, D]: ``y`` [N] class indices (softmax; -100 is ignored) or, when
    ``multilabel``, ``y`` [N, V] multi-hot targets (one class-balanced sigmoid per label)."""
    torch.manual_seed(seed)
    classes = y.shape[1] if multilabel else int(y.max()) + 1
    probe = torch.nn.Linear(x.shape[1], classes)
    optimiser = torch.optim.Adam(probe.parameters(), lr=PROBE_LR, weight_decay=PROBE_WEIGHT_DECAY)
    if multilabel:  # class-balanced, so that a rare value is not simply always "absent"
        positives = y.sum(0).clamp(min=1)
        weight = ((len(y) - positives) / positives).clamp(min=1.0)
        loss_fn = partial(torch.nn.functional.binary_cross_entropy_with_logits, pos_weight=weight)
    else:
        loss_fn = torch.nn.functional.cross_entropy
    for _ in range(steps):
        optimiser.zero_grad()
        loss_fn(probe(x), y).backward()
        optimiser.step()
    return probe


def predict(probe: torch.nn.Linear, x: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """Multi-hot predictions (logit > 0) or the arg-max class per row."""
    with torch.no_grad():
        logits = probe(x)
    return logits > 0 if multilabel else logits.argmax(-1)
