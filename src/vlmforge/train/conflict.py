"""Modality conflict in the shared layers (Uni-X's analysis): how differently text and multimodal data pull
on the same weights.

Gradients are averaged separately over text-only batches and over multimodal batches. For each shared layer and
weight type (q, k, v, o, gate, up, down) their cosine is taken, minus the cosine between the mean gradients of
two random halves of the mixed batches (what two samples of one distribution already disagree by);
conflict = -(cosine - baseline), so higher means more conflict. Both sides must mask labels the same way (for
instance loss on every answer token), or the comparison measures the masking, not the modality.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WEIGHT_TYPES = {
    "q": "self_attn.q_proj.weight",
    "k": "self_attn.k_proj.weight",
    "v": "self_attn.v_proj.weight",
    "o": "self_attn.o_proj.weight",
    "gate": "mlp.gate_proj.weight",
    "up": "mlp.up_proj.weight",
    "down": "mlp.down_proj.weight",
}


def shared_layers(model: nn.Module) -> list[int]:
    """Indices of the decoder layers both modalities pass through with the same weights: every layer of a plain
    or shared-arm model, the middle ones of a two_end model, none of a mot model."""
    return shared_layer_indices(model.config, len(model.model.layers))


def shared_layer_indices(config, count: int) -> list[int]:
    """``shared_layers`` from a model's config and its number of decoder layers, without loading its weights."""
    if getattr(config, "arm", "shared") == "mot":
        return []
    split = set(getattr(config, "split_layers", ()))
    return [i for i in range(count) if i not in split]


def _weights(model: nn.Module, layers: Sequence[int]) -> dict[tuple[int, str], nn.Parameter]:
    found = {}
    for index in layers:
        layer = model.model.layers[index]
        for kind, name in WEIGHT_TYPES.items():
            found[(index, kind)] = layer.get_parameter(name)
    return found


def mean_gradients(
    model: nn.Module, batches: Sequence[dict], weights: dict[tuple[int, str], nn.Parameter]
) -> dict[tuple[int, str], torch.Tensor]:
    """The gradient of each batch's mean loss, averaged over ``batches``, for ``weights`` only (the model's own
    ``.grad`` fields are left alone)."""
    if not batches:
        raise ValueError("no batches to average gradients over")
    keys, params = list(weights), list(weights.values())
    total = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    was_training = model.training
    model.train()
    try:
        for batch in batches:
            loss = model(**batch, use_cache=False).loss
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for acc, grad in zip(total, grads, strict=True):
                if grad is not None:
                    acc.add_(grad.float(), alpha=1 / len(batches))
    finally:
        model.train(was_training)
    return dict(zip(keys, total, strict=True))


def gradient_conflict(
    model: nn.Module,
    text_batches: Sequence[dict],
    multimodal_batches: Sequence[dict],
    layers: Sequence[int] | None = None,
    seed: int = 0,
) -> dict:
    """Conflict per layer and weight type. ``layers``: which layer indices to compare (default: the model's
    shared layers; pass the same indices to compare two arms layer for layer). The baseline's mixed data is
    both lists of batches together, shuffled and halved."""
    layers = list(shared_layers(model) if layers is None else layers)
    mixed = list(text_batches) + list(multimodal_batches)
    if len(mixed) < 2:
        raise ValueError("the random-halves baseline needs at least 2 batches")
    random.Random(seed).shuffle(mixed)
    weights = _weights(model, layers)
    text = mean_gradients(model, text_batches, weights)
    multimodal = mean_gradients(model, multimodal_batches, weights)
    half_a = mean_gradients(model, mixed[: len(mixed) // 2], weights)
    half_b = mean_gradients(model, mixed[len(mixed) // 2 :], weights)

    def cosine(a, b, key):
        return float(F.cosine_similarity(a[key].flatten(), b[key].flatten(), dim=0, eps=1e-12))

    result = {"layers": layers, "cosine": {}, "baseline": {}, "conflict": {}}
    for kind in WEIGHT_TYPES:
        raw = [cosine(text, multimodal, (i, kind)) for i in layers]
        base = [cosine(half_a, half_b, (i, kind)) for i in layers]
        result["cosine"][kind], result["baseline"][kind] = raw, base
        result["conflict"][kind] = [-(r - b) for r, b in zip(raw, base, strict=True)]
    return result


def plot_conflict(results: dict[str, dict], path: str | Path) -> Path:
    """One panel per weight type: conflict against layer index, one line per named result (e.g. per arm)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(WEIGHT_TYPES), figsize=(3 * len(WEIGHT_TYPES), 3), sharey=True)
    for ax, kind in zip(axes, WEIGHT_TYPES, strict=True):
        for name, result in results.items():
            ax.plot(result["layers"], result["conflict"][kind], marker="o", label=name)
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.set_title(kind)
        ax.set_xlabel("layer")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layer indices, never fractions
    axes[0].set_ylabel("conflict = -(cos - baseline)")
    axes[-1].legend(fontsize="small")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
