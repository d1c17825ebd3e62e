"""Modality conflict: gradient cosines per shared layer and weight type against the random-halves baseline."""

from __future__ import annotations

import torch

from unified_helpers import mixed_row, tiny_unified
from vlmforge.train.conflict import WEIGHT_TYPES, gradient_conflict, plot_conflict, shared_layers


def batches(rows_list):
    return [{"input_ids": torch.tensor(rows), "labels": torch.tensor(rows)} for rows in rows_list]


def test_conflict_on_shared_layers_with_the_baseline(tmp_path):
    model = tiny_unified(e=1, d=1)
    assert shared_layers(model) == [1, 2]
    assert shared_layers(tiny_unified(arm="shared")) == [0, 1, 2, 3] and shared_layers(tiny_unified(arm="mot")) == []
    g = torch.Generator().manual_seed(0)
    text = batches([torch.randint(6, 50, (2, 12), generator=g).tolist() for _ in range(3)])
    multimodal = batches([[mixed_row(i, text=4, codes=4), mixed_row(i + 9, text=4, codes=4)] for i in range(3)])
    result = gradient_conflict(model, text, multimodal)
    assert result["layers"] == [1, 2] and set(result["conflict"]) == set(WEIGHT_TYPES)
    for kind in WEIGHT_TYPES:
        rows = zip(result["cosine"][kind], result["baseline"][kind], result["conflict"][kind], strict=True)
        for raw, base, conflict in rows:
            assert -1 <= raw <= 1 and -1 <= base <= 1 and abs(conflict + (raw - base)) < 1e-9
    same = gradient_conflict(model, text, text, layers=[0, 3])
    assert all(abs(c - 1) < 1e-5 for kind in WEIGHT_TYPES for c in same["cosine"][kind])
    assert all(p.grad is None for p in model.parameters())  # the model's own gradients are left alone
    assert plot_conflict({"two_end": result}, tmp_path / "conflict.png").stat().st_size > 0
