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


def _assemble_unified(m) -> tuple[Any, Any]:
    from vlmforge.models.image_tokenizer import load_image_tokenizer
    from vlmforge.models.unified import UnifiedSpec, unified_from_pretrained_lm
    from vlmforge.models.unified.code_embeddings import code_vectors
    from vlmforge.models.unified.processor import UnifiedProcessor

    u = m.unified
    images = load_image_tokenizer(u.image_tokenizer)
    spec = UnifiedSpec(u.arm, u.encode_layers, u.decode_layers, images.codebook_size, tuple(images.grid),
                       u.init_vision_with_text, u.code_init)  # fmt: skip
    vectors = code_vectors(images) if u.code_init == "codebook" else None
    model, tokenizer = unified_from_pretrained_lm(m.language_model, spec, m.dtype, vectors)
    return model, UnifiedProcessor(tokenizer, u.image_tokenizer)


def _unified_parts(model: nn.Module) -> ModelParts:
    # No projector: the codes are vocabulary ids. The LM body includes the vision copies of the split layers.
    return ModelParts(None, nn.Identity(), _UnifiedBody(model), model.lm_head)


class _UnifiedBody(nn.Module):
    """The unified model's body as one module: the base model and the vision copies of its layers."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.vision_layers = model.model, model.vision_layers

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()


ARCHITECTURES = {
    "llava": Architecture("llava", "llava", _assemble_llava, _llava_parts),
    "embedding_vlm": Architecture(
        "embedding_vlm",
        "vlmforge_embedding_vlm",
        _assemble_embedding_vlm,
        _embedding_vlm_parts,
        trainable_encoder=False,  # the frozen encoder defines the space the caption embeddings were moved into
    ),
    "unified": Architecture("unified", "vlmforge_unified", _assemble_unified, _unified_parts, trainable_encoder=False),
}


def load_checkpoint(path: str) -> tuple[Any, Any]:
    """A saved vlmforge model folder and its processor: a unified model (with its image tokenizer) or a VLM."""
    import json
    from pathlib import Path

    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

    config = Path(path) / "config.json"
    model_type = json.loads(config.read_text()).get("model_type") if config.is_file() else None
    if model_type == ARCHITECTURES["unified"].model_type:
        from vlmforge.models.unified.processor import UnifiedProcessor

        return AutoModelForCausalLM.from_pretrained(path), UnifiedProcessor.from_pretrained(path)
    return AutoModelForImageTextToText.from_pretrained(path), AutoProcessor.from_pretrained(path)


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
