"""The one place that knows vlmforge's VLM architectures: how to assemble each from a recipe's model section,
and where its parts are (for freezing, LoRA targets and learning-rate groups).

Training code asks this registry instead of branching on model types, so adding an architecture is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from vlmforge.errors import ConfigError


@dataclass
class ModelParts:
    encoder: nn.Module | None  # the image side (LLaVA's vision tower / the paired image encoder), if any
    projector: nn.Module
    language_model: nn.Module  # the LM body, without its output head
    lm_head: nn.Module


@dataclass(frozen=True)
class Architecture:
    name: str
    model_type: str  # config.model_type of the saved checkpoint
    assemble: Callable[[Any], tuple[Any, Any]]  # recipe ModelConfig -> (model, processor)
    parts: Callable[[nn.Module], ModelParts]
    trainable_encoder: bool = True  # whether `unfreeze_vision` makes sense


def _assemble_llava(m) -> tuple[Any, Any]:
    from vlmforge.models.assemble import AssemblySpec, assemble_llava

    if not m.vision_model:
        raise ConfigError("model.vision_model is required for architecture llava (or init_from: a checkpoint)")
    return assemble_llava(
        AssemblySpec(m.vision_model, m.language_model, m.projector, m.vision_feature_layer,
                     m.vision_feature_select_strategy, m.dtype)
    )  # fmt: skip


def _llava_parts(model: nn.Module) -> ModelParts:
    core = model.model
    return ModelParts(core.vision_tower, core.multi_modal_projector, core.language_model, model.lm_head)


def _assemble_embedding_vlm(m) -> tuple[Any, Any]:
    from vlmforge.models.embedding_vlm import assemble_embedding_vlm

    return assemble_embedding_vlm(
        m.language_model, m.vision_model or None, m.embed_dim, m.num_visual_tokens, m.projector, m.dtype
    )


def _embedding_vlm_parts(model: nn.Module) -> ModelParts:
    lm = model.language_model
    return ModelParts(model.vision_tower, model.multi_modal_projector, lm.base_model, lm.get_output_embeddings())


ARCHITECTURES = {
    "llava": Architecture("llava", "llava", _assemble_llava, _llava_parts),
    "embedding_vlm": Architecture(
        "embedding_vlm",
        "vlmforge_embedding_vlm",
        _assemble_embedding_vlm,
        _embedding_vlm_parts,
        trainable_encoder=False,  # the frozen encoder defines the space the caption embeddings were moved into
    ),
}


def get_architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ConfigError(f"unknown model.architecture '{name}'; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def architecture_of(model: nn.Module) -> Architecture:
    """The architecture of a model (or of the model inside a PEFT wrapper), from its config's model_type."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    for arch in ARCHITECTURES.values():
        if arch.model_type == inner.config.model_type:
            return arch
    raise ConfigError(f"vlmforge cannot train model type '{inner.config.model_type}'")


def model_parts(model: nn.Module) -> ModelParts:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return architecture_of(inner).parts(inner)
