"""Assemble a LLaVA model from any vision tower and any causal LM.

The result is a plain ``LlavaForConditionalGeneration`` plus a ``LlavaProcessor`` in the llava-hf layout, so
transformers, vLLM and lmms-eval load it without vlmforge (docs/design.md, "Standard artifacts"). Composition happens through
configs: the vision and text configs are embedded in a ``LlavaConfig`` and the pretrained weights are copied into
the freshly built sub-modules, so no per-backbone code exists here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerBase,
)

from vlmforge.errors import ConfigError

FeatureLayer: TypeAlias = int | Sequence[int]  # LLaVA's vision_feature_layer: one hidden state, or several per token

IMAGE_TOKEN = "<image>"
# Projector name -> LLaVA's projector activation. "linear" uses the identity activation, so Linear-Linear is one
# linear map and the checkpoint stays loadable as plain LLaVA.
PROJECTORS = {"mlp2x_gelu": "gelu", "linear": "linear"}

# A ChatML template used only when the LM's tokenizer ships none (a base model). Hub chat models keep their own.
# Assistant turns are wrapped in {% generation %} (transformers' marker for assistant tokens), so the label mask
# comes from one render instead of one render per turn prefix (vlmforge.data.chat).
DEFAULT_CHAT_TEMPLATE = (
    "{% macro render(content) %}"
    "{% if content is string %}{{ content }}"
    "{% else %}{% for part in content %}"
    "{% if part['type'] == 'image' %}{{ '<image>\n' }}{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endmacro %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ render(message['content']) + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ render(message['content']) + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class AssemblySpec:
    """What to build: two pretrained parts and how to connect them."""

    vision_model: str
    language_model: str
    projector: str = "mlp2x_gelu"
    vision_feature_layer: int | list[int] = -2  # a list concatenates those layers (LLaVA does this natively)
    # "full" keeps every patch token (SigLIP, no CLS); "default" drops the first token (CLIP's CLS).
    vision_feature_select_strategy: str | None = None
    dtype: str = "float32"


def resolve_model_path(name_or_path: str, what: str) -> str:
    """Fail early, with a readable message, on a local-looking path that does not exist.

    Hub ids ("org/name") are passed through; transformers reports hub errors itself. A path that looks local
    (starts with '.', '/', '~' or exists as a relative folder prefix) but is missing would otherwise surface as a
    confusing hub lookup stack trace.
    """
    path = Path(name_or_path).expanduser()
    looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1
    if looks_local and not path.exists():
        raise ConfigError(f"{what} '{name_or_path}' does not exist (not a local folder, nor an 'org/name' hub id)")
    if path.exists() and path.is_dir() and not (path / "config.json").exists():
        raise ConfigError(f"{what} '{name_or_path}' is a folder without config.json: not a saved model")
    return str(path) if path.exists() else name_or_path


def vision_config_of(vision_model: str):
    """The vision config of a vision model folder or hub id."""
    config = AutoConfig.from_pretrained(vision_model)
    # Full CLIP/SigLIP checkpoints carry text+vision; LLaVA wants the vision half only.
    return getattr(config, "vision_config", config)


def default_select_strategy(vision_config) -> str:
    """LLaVA's choice when none is given: drop CLIP's CLS token ("default"), keep every SigLIP token ("full")."""
    return "default" if "clip" in vision_config.model_type else "full"


def _load_vision_weights(vision_model: str, target: torch.nn.Module) -> None:
    source = AutoModel.from_pretrained(vision_model)
    source = getattr(source, "vision_model", source)
    target_inner = getattr(target, "vision_model", target)
    missing, unexpected = target_inner.load_state_dict(source.state_dict(), strict=False)
    # Pooling heads/projections of the source are not part of LLaVA's tower; anything else missing is a bug.
    if missing:
        raise ConfigError(f"vision weights from '{vision_model}' do not fit the tower: missing {missing[:5]}")


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give any causal-LM tokenizer what LLaVA needs: an ``<image>`` token, a pad token, a chat template."""
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer


def num_image_tokens(vision_config) -> int:
    """Patch tokens per image; CLIP's CLS token is dropped by the "default" strategy, so both give the grid."""
    side = vision_config.image_size // vision_config.patch_size
    return side * side


def feature_layers(layer: FeatureLayer) -> list[int]:
    """``vision_feature_layer``'s indices as a list (LLaVA takes one index or a list)."""
    return [layer] if isinstance(layer, int) else list(layer)


def check_feature_layers(layer: FeatureLayer, vision_config) -> None:
    """Refuse ``vision_feature_layer`` indices the tower does not have, naming the valid range: a tower of L layers
    has L + 1 hidden states (the patch embeddings, then each layer's output)."""
    states = vision_config.num_hidden_layers + 1
    layers = feature_layers(layer)
    bad = [index for index in layers if not isinstance(index, int) or not -states <= index < states]
    if not layers or bad:
        raise ConfigError(
            f"model.vision_feature_layer {layer!r}: the vision tower has {states} hidden states, so each index must "
            f"be an integer from {-states} to {states - 1} (-1: the last layer's output, -2: the one before)"
        )


def reset_projector(projector: torch.nn.Module) -> None:
    """Give the projector PyTorch's default ``nn.Linear`` init, as LLaVA and Bunny do: they build it after loading the
    LM, so transformers' ``normal(0, initializer_range)`` never reaches it. That init is far smaller, and a
    projector started that small can sit at the answer prior for most of stage 1 before it starts to learn."""
    for module in projector.modules():
        if isinstance(module, torch.nn.Linear):
            module.reset_parameters()


def assemble_llava(spec: AssemblySpec) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """Build a LLaVA model + processor from a vision model and a causal LM (hub ids or local folders)."""
    if spec.projector not in PROJECTORS:
        raise ConfigError(f"unknown projector '{spec.projector}'; choose one of {sorted(PROJECTORS)}")
    vision_path = resolve_model_path(spec.vision_model, "vision model")
    lm_path = resolve_model_path(spec.language_model, "language model")

    vision_config = vision_config_of(vision_path)
    check_feature_layers(spec.vision_feature_layer, vision_config)
    text_config = AutoConfig.from_pretrained(lm_path)
    strategy = spec.vision_feature_select_strategy or default_select_strategy(vision_config)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(lm_path))

    config = LlavaConfig(
        vision_config=vision_config.to_dict(),
        text_config=text_config.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=num_image_tokens(vision_config),
        vision_feature_layer=spec.vision_feature_layer,
        vision_feature_select_strategy=strategy,
        projector_hidden_act=PROJECTORS[spec.projector],
    )
    config.text_config.vocab_size = max(text_config.vocab_size, len(tokenizer))
    model = LlavaForConditionalGeneration(config)
    reset_projector(model.model.multi_modal_projector)
    _load_vision_weights(vision_path, model.model.vision_tower)
    lm = AutoModelForCausalLM.from_pretrained(lm_path)
    if len(tokenizer) > lm.get_input_embeddings().num_embeddings:
        lm.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    model.model.language_model.load_state_dict(lm.model.state_dict() if hasattr(lm, "model") else lm.state_dict())
    model.lm_head.load_state_dict(lm.get_output_embeddings().state_dict())
    model = model.to(getattr(torch, spec.dtype))

    image_processor = AutoImageProcessor.from_pretrained(vision_path)
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=1 if strategy == "default" else 0,
        chat_template=tokenizer.chat_template,
    )
    return model, processor
