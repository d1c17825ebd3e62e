"""Training recipes: YAML <-> dataclasses, with ``--set key=value`` overrides.

A recipe names the parts (vision model, LM, projector), the data, and the stages to run. Unknown keys are an
error that lists the valid ones, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vlmforge.errors import ConfigError

STAGE_KINDS = ("pretrain", "finetune")
TUNE_MODES = ("full", "lora", "projector")
# How a stage forms its batches (see vlmforge.train.batching): auto picks the cheapest for the stage's lengths.
BATCHING_MODES = ("auto", "padding", "length_grouped", "packing")


@dataclass
class UnifiedModelConfig:
    """architecture: unified (Uni-X, see docs/unix.md): the arm, its split layers and the image tokenizer folder,
    whose codebook and code grid the model is built for."""

    arm: str = "two_end"  # shared | two_end | mot
    encode_layers: int = 0  # E: the first E layers get a vision copy (two_end)
    decode_layers: int = 0  # D: the last D layers get a vision copy (two_end)
    image_tokenizer: str = ""  # a saved image tokenizer folder (vlmforge.models.image_tokenizer)
    init_vision_with_text: bool = True
    code_init: str = "mean"  # mean (Uni-X) | codebook: code embeddings start from the tokenizer's code vectors


@dataclass
class ModelConfig:
    """The parts to assemble (hub ids or local folders), or an existing checkpoint to continue from."""

    architecture: str = "llava"  # llava | embedding_vlm | unified (see vlmforge.models.architectures)
    vision_model: str = ""  # llava: the vision tower; embedding_vlm: the paired image encoder (optional)
    language_model: str = ""
    projector: str = "mlp2x_gelu"
    vision_feature_layer: int | list[int] = -2  # a list concatenates those layers (LLaVA does this natively)
    vision_feature_select_strategy: str | None = None  # None: "full" for SigLIP, "default" (drop CLS) for CLIP
    init_from: str | None = None  # a saved LLaVA checkpoint; skips assembly
    dtype: str = "float32"
    embed_dim: int | None = None  # embedding_vlm: size of one image embedding (default: the encoder's output size)
    num_visual_tokens: int = 16  # embedding_vlm: <image> tokens one embedding fills
    unified: UnifiedModelConfig = field(default_factory=UnifiedModelConfig)


@dataclass
class MixConfig:
    """architecture: unified: the stage's sample mix (vlmforge.train.unified_data). Weights need not sum to 1."""

    understanding: float = 1.0  # image-to-text samples, from data.path
    generation: float = 0.0  # text-to-image samples, from data.generation_path
    text: float = 0.0  # text-only samples, from data.text_only_path
    samples: int | None = None  # samples per epoch (default: every record of the sources drawn from)
    unconditional_rate: float = 0.1  # share of text-to-image samples whose caption becomes <unconditional>


@dataclass
class DataConfig:
    path: str = ""  # JSONL / JSON / Parquet of LLaVA records
    image_folder: str | None = None  # image paths in records are relative to this (default: the file's folder)
    text_only_path: str | None = None  # optional text-only records mixed in
    embeddings: str | None = None  # EmbeddingStore folder that records' "image_embedding" ids point into
    max_samples: int | None = None
    # Processed images, and each record's token ids, kept in memory between epochs, per process
    # (vlmforge.data.memory_cache); 0 turns a cache off.
    image_cache_mb: int = 1024
    token_cache_mb: int = 256
    reword_questions: bool = False  # finetune: reword a share of the questions with templates (vlmforge.data.reword)
    generation_path: str | None = None  # unified: records with an image and its caption, for text-to-image
    codes: str | None = None  # unified: folder of the images' codes (default: <output_dir>/codes), encoded once
    mix: MixConfig = field(default_factory=MixConfig)


@dataclass
class LoraConfig:
    r: int = 128
    alpha: int = 256
    dropout: float = 0.05
    projector_lr: float = 2e-5  # Bunny: the projector keeps training at its own, lower rate


@dataclass
class StageConfig:
    kind: str = "finetune"  # pretrain: projector only, plain template | finetune: projector + LM
    data: DataConfig = field(default_factory=DataConfig)
    tune: str = "full"  # finetune only: full | lora | projector (chat template, projector trains alone)
    lora: LoraConfig = field(default_factory=LoraConfig)
    unfreeze_vision: bool = False
    learning_rate: float = 2e-5
    epochs: float = 1.0
    max_steps: int = -1
    global_batch_size: int = 128  # = per-device batch x gradient accumulation x processes
    per_device_batch_size: int = 16
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    max_length: int = 2048
    batching: str = "auto"  # auto | padding | length_grouped | packing
    save_steps: int = 500
    save_total_limit: int = 2
    logging_steps: int = 10
    gradient_checkpointing: bool = False
    bf16: bool = False
    dataloader_workers: int = 0
    # Held-out records scored every eval_steps steps and at the end (loss and teacher-forced answer accuracy,
    # see vlmforge.train.heldout); an empty path turns evaluation off.
    eval_data: DataConfig = field(default_factory=DataConfig)
    eval_steps: int = 500


@dataclass
class Recipe:
    name: str = "recipe"
    output_dir: str = "runs/recipe"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    stages: dict[str, StageConfig] = field(default_factory=dict)  # run in order of appearance
    on_error: str = "raise"  # raise | skip (bad records skipped and counted in the manifest)

    def validate(self) -> Recipe:
        if not self.stages:
            raise ConfigError(
                f"recipe '{self.name}' has no stages; add e.g. `stages: {{pretrain: ..., finetune: ...}}`"
            )
        for name, stage in self.stages.items():
            _check_choice(f"stages.{name}.kind", stage.kind, STAGE_KINDS)
            _check_choice(f"stages.{name}.tune", stage.tune, TUNE_MODES)
            _check_choice(f"stages.{name}.batching", stage.batching, BATCHING_MODES)
            if self.model.architecture == "unified":
                _check_unified_stage(name, stage)
            elif not stage.data.path:
                raise ConfigError(f"stages.{name}.data.path is required")
            if stage.data.reword_questions and stage.kind == "pretrain":
                raise ConfigError(f"stages.{name}.data.reword_questions: a pretrain stage has captions, not questions")
            for cache in ("image_cache_mb", "token_cache_mb"):
                if getattr(stage.data, cache) < 0:
                    raise ConfigError(f"stages.{name}.data.{cache} must be >= 0 (0 turns the cache off)")
            if stage.eval_data.path and stage.eval_steps < 1:
                raise ConfigError(f"stages.{name}.eval_steps must be at least 1, got {stage.eval_steps}")
            if stage.global_batch_size % stage.per_device_batch_size:
                raise ConfigError(
                    f"stages.{name}: global_batch_size {stage.global_batch_size} is not a multiple of "
                    f"per_device_batch_size {stage.per_device_batch_size}"
                )
        kinds = [stage.kind for stage in self.stages.values()]
        if "pretrain" in kinds[kinds.index("finetune") :] if "finetune" in kinds else False:
            raise ConfigError(
                f"stages run in the order written ({', '.join(self.stages)}); a pretrain stage cannot follow a "
                "finetune stage — reorder them"
            )
        _check_choice("on_error", self.on_error, ("raise", "skip"))
        _check_choice("model.unified.code_init", self.model.unified.code_init, ("mean", "codebook"))
        if self.model.architecture == "unified" and not self.model.init_from and not self.model.unified.image_tokenizer:
            raise ConfigError("model.unified.image_tokenizer is required: the saved image tokenizer folder")
        if not self.model.init_from and not self.model.language_model:
            raise ConfigError("model needs language_model (and, for llava, vision_model), or init_from: a checkpoint")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_unified_stage(name: str, stage: StageConfig) -> None:
    """A unified stage trains the whole model on a mix whose every drawn source has a path."""
    if stage.kind != "finetune" or stage.tune != "full":
        raise ConfigError(f"stages.{name}: a unified model trains as kind: finetune with tune: full")
    mix = stage.data.mix
    sources = {"understanding": stage.data.path, "generation": stage.data.generation_path,
               "text": stage.data.text_only_path}  # fmt: skip
    keys = {"understanding": "path", "generation": "generation_path", "text": "text_only_path"}
    for source, path in sources.items():
        weight = getattr(mix, source)
        if weight < 0:
            raise ConfigError(f"stages.{name}.data.mix.{source} must be >= 0, got {weight}")
        if weight > 0 and not path:
            raise ConfigError(f"stages.{name}.data.mix.{source} is {weight} but data.{keys[source]} is not set")
    if not any(getattr(mix, source) > 0 for source in sources):
        raise ConfigError(f"stages.{name}.data.mix gives every source weight 0; nothing to train on")
    if not 0 <= mix.unconditional_rate <= 1:
        raise ConfigError(f"stages.{name}.data.mix.unconditional_rate must lie in [0, 1], got {mix.unconditional_rate}")


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got '{value}'")


def _build(cls, data: Any, where: str):
    """Recursively build dataclass ``cls`` from plain data, rejecting unknown keys with the valid ones listed."""
    if not dataclasses.is_dataclass(cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'recipe'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(valid))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown recipe key {prefix}{unknown[0]}; valid keys here: {', '.join(valid)}")
    kwargs = {}
    for key, value in data.items():
        hint, path = hints[key], f"{where}.{key}" if where else key
        if key == "stages" and cls is Recipe:
            kwargs[key] = {name: _build_stage(name, spec) for name, spec in (value or {}).items()}
        else:
            kwargs[key] = (
                _build(_dataclass_in(hint), value, path) if _dataclass_in(hint) else _coerce(hint, value, path)
            )
    return cls(**kwargs)


def _build_stage(name: str, spec: Any) -> StageConfig:
    spec = dict(spec or {})
    spec.setdefault("kind", name if name in STAGE_KINDS else "finetune")  # `pretrain:` means kind pretrain
    if "packing" in spec:
        _translate_packing(name, spec)
    return _build(StageConfig, spec, f"stages.{name}")


def _translate_packing(name: str, spec: dict[str, Any]) -> None:
    """The old ``packing: bool`` key still works, as ``batching: packing`` or ``batching: padding``."""
    packing = _coerce(bool, spec.pop("packing"), f"stages.{name}.packing")
    mode = "packing" if packing else "padding"
    if spec.get("batching", "auto") not in ("auto", mode):
        raise ConfigError(
            f"stages.{name}: packing: {packing} contradicts batching: {spec['batching']}; keep only batching"
        )
    spec["batching"] = mode
    warnings.warn(
        f"stages.{name}.packing is deprecated; use stages.{name}.batching: {mode} (one of {', '.join(BATCHING_MODES)})",
        FutureWarning,
        stacklevel=4,
    )


def _dataclass_in(hint):
    return hint if dataclasses.is_dataclass(hint) else None


def _coerce(hint, value: Any, where: str) -> Any:
    """YAML already gives typed scalars; `--set` gives strings. Convert to the field's type, clearly on failure."""
    if value is None:
        return None
    options = (
        typing.get_args(hint)
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        else (hint,)
    )
    for option in options:
        if option is type(None):
            continue
        if option is bool and isinstance(value, str):
            if value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            continue
        if option in (int, float, str) and not isinstance(value, bool):
            try:
                return option(value)
            except (TypeError, ValueError):
                continue
        if isinstance(value, option if isinstance(option, type) else object):
            return value
    raise ConfigError(f"{where}: cannot use {value!r} as {hint}")


def load_recipe(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), variables: dict[str, str] | None = None
) -> Recipe:
    """Read a YAML recipe, substitute ``${name}`` variables (in the file and in the overrides, so that
    ``--set stages.finetune.data.path=${world}/train/instruct.jsonl`` works), apply ``key.sub=value`` overrides,
    validate."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"recipe '{path}' does not exist")
    text = _substitute(path.read_text(), variables or {})
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    return recipe_from_dict(data, [_substitute_override(item, variables or {}) for item in overrides])


def _substitute(text: str, variables: dict[str, str]) -> str:
    for name, value in variables.items():
        text = text.replace("${" + name + "}", str(value))
    return text


def _substitute_override(item: str, variables: dict[str, str]) -> str:
    """An override's ``${name}``s filled in; one left over is a user's typo, unlike in a recipe file, where the
    lab leaves some (e.g. ``${embeddings}`` of a recipe it then overrides) on purpose."""
    item = _substitute(item, variables)
    left = re.findall(r"\$\{(\w+)\}", item)
    if left and variables:  # without variables (plain `vlmforge train`) a value is taken literally
        raise ConfigError(f"--set {item}: unknown variable ${{{left[0]}}} (known here: {', '.join(sorted(variables))})")
    return item


def recipe_from_dict(data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        set_dotted(data, key.strip(), yaml.safe_load(value))
    return _build(Recipe, data, "").validate()


def set_dotted(data: dict, key: str, value: Any) -> None:
    """``data['a']['b'] = value`` for ``key='a.b'``, creating sections; a non-section on the way is a ConfigError."""
    node = data
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section")
    node[last] = value


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
