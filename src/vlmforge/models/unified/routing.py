"""Per-token routing for the MoT arm: each norm, attention projection and MLP of a layer has a vision twin, and
every token's output comes from its own modality's module, while attention itself stays global.

The routing is a forward hook on each module of the (text) decoder layer, so transformers' own layer and
attention code runs unchanged: the hook replaces the vision tokens' rows of the module's output by the twin's
output on those rows. The text module still computes the vision rows it then drops, a cost accepted for not
copying the layer's code.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def routed_modules(layer: nn.Module) -> list[str]:
    """Names of a decoder layer's modules that get a twin: its norms and MLP, and every module of its attention
    (q/k/v/o projections, and q/k norms where the LM has them)."""
    names = [n for n, m in layer.named_children() if n != "self_attn" and any(True for _ in m.parameters())]
    attention = getattr(layer, "self_attn", None)
    if attention is None:
        raise ValueError(f"{type(layer).__name__} has no self_attn: the mot arm needs Qwen2-family decoder layers")
    return names + [f"self_attn.{n}" for n, m in attention.named_children() if any(True for _ in m.parameters())]


def route(layer: nn.Module, twin: nn.Module, vision: Callable[[], torch.Tensor | None]) -> None:
    """Hook every routed module of ``layer`` so that vision tokens (``vision()`` [batch, seq], read at call time)
    take the output of the same module in ``twin``."""
    for name in routed_modules(layer):
        layer.get_submodule(name).register_forward_hook(_hook(twin.get_submodule(name), vision))


def _hook(twin: nn.Module, vision: Callable[[], torch.Tensor | None]):
    def replace_vision_rows(module, args, output):
        mask = vision()
        if mask is None or not bool(mask.any()):
            return output
        inputs = args[0]
        if inputs.shape[:2] != mask.shape:
            raise RuntimeError(f"routing mask {list(mask.shape)} does not match the tokens {list(inputs.shape[:2])}")
        return output.index_put(torch.nonzero(mask, as_tuple=True), twin(inputs[mask]))

    return replace_vision_rows
