"""Which parameters a stage trains: projector only (pretrain, or finetune with ``tune: projector``), projector +
LM (full), or LoRA on the LM.

Bunny's rules (its paper and code, docs/bunny.md): stage 1 freezes the vision tower and the LM; stage 2 trains the
projector and the LM; LoRA targets every Linear of the LM (not the vision tower, the projector or lm_head) and keeps
the projector fully trainable through PEFT's ``modules_to_save``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vlmforge.errors import ConfigError
from vlmforge.models.architectures import architecture_of, model_parts
from vlmforge.train.recipe import StageConfig

PROJECTOR = "multi_modal_projector"


def lm_linear_module_names(model: nn.Module) -> list[str]:
    """Full names of every nn.Linear inside the language model: the LoRA targets, for any LM architecture."""
    lm = model_parts(model).language_model
    lm_ids = {id(m) for m in lm.modules()}
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear) and id(module) in lm_ids]


def configure_trainable(model: nn.Module, stage: StageConfig) -> nn.Module:
    """Freeze / unfreeze per the stage and, for LoRA, wrap with PEFT. Returns the model to train."""
    parts = model_parts(model)
    model.requires_grad_(False)
    parts.projector.requires_grad_(True)
    if stage.kind == "pretrain":
        return model
    if stage.tune == "projector":  # a finetune on chat data that moves only the projector (Genixer's synthetic stage)
        if stage.unfreeze_vision:
            raise ConfigError("tune: projector trains the projector alone; it cannot be combined with unfreeze_vision")
        return model
    if stage.unfreeze_vision:
        if parts.encoder is None or not architecture_of(model).trainable_encoder:
            raise ConfigError(f"unfreeze_vision is not supported for architecture {architecture_of(model).name}")
        parts.encoder.requires_grad_(True)
    if stage.tune == "full":
        parts.language_model.requires_grad_(True)
        parts.lm_head.requires_grad_(True)
        return model

    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=stage.lora.r,
        lora_alpha=stage.lora.alpha,
        lora_dropout=stage.lora.dropout,
        target_modules=lm_linear_module_names(model),
        modules_to_save=[PROJECTOR] + (["vision_tower"] if stage.unfreeze_vision else []),
        task_type=None,  # LLaVA is not a plain causal LM; PEFT's generic wrapper keeps its forward signature
    )
    return get_peft_model(model, config)


def parameter_groups(model: nn.Module, stage: StageConfig) -> list[dict]:
    """Optimizer groups: no weight decay on biases/norms; under LoRA the projector gets its own learning rate."""
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lr = stage.learning_rate
        if stage.kind == "finetune" and stage.tune == "lora" and PROJECTOR in name:
            lr = stage.lora.projector_lr
        decay = 0.0 if param.ndim < 2 else stage.weight_decay
        groups.setdefault((lr, decay), []).append(param)
    return [{"params": params, "lr": lr, "weight_decay": decay} for (lr, decay), params in groups.items()]


def count_parameters(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def merge_lora(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Fold a LoRA adapter into its base LLaVA and save a plain LLaVA checkpoint (model + processor)."""
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise ConfigError(f"'{adapter_dir}' is not a LoRA adapter folder (no adapter_config.json)")
    base_path = PeftConfig.from_pretrained(adapter_dir).base_model_name_or_path
    base = AutoModelForImageTextToText.from_pretrained(base_path)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(out_dir)
    AutoProcessor.from_pretrained(
        adapter_dir if (adapter_dir / "processor_config.json").exists() else base_path
    ).save_pretrained(out_dir)
    return Path(out_dir)
