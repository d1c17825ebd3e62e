"""Run a recipe: each stage loads the previous stage's result, trains, and exports a plain LLaVA checkpoint.

Layout of ``output_dir``::

    recipe.yaml                 the resolved recipe
    <stage>/checkpoint-N/       Trainer checkpoints (resumable, LoRA ones included)
    <stage>/final/              plain LLaVA checkpoint (model + processor); for LoRA also <stage>/adapter/
    <stage>/metrics.jsonl       one line per log event
    <stage>/data_order.jsonl    which samples each update saw (evidence that resume replays the same order)
    <stage>/length_grouped_order.jsonl   length-grouped batching: each epoch's sample order, as drawn
    <stage>/manifest.json       config, input hashes, versions, counts, rejections, wall time
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path

import torch
from transformers import ProgressCallback, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from vlmforge import console
from vlmforge.data.length_grouping import LengthGroupedSampler
from vlmforge.data.packing import disable_kv_cache
from vlmforge.errors import ConfigError
from vlmforge.manifest import write_manifest
from vlmforge.models.architectures import get_architecture, load_checkpoint
from vlmforge.models.assemble import resolve_model_path
from vlmforge.provenance import write_inputs
from vlmforge.train.data import build_training_data
from vlmforge.train.flops import flop_model
from vlmforge.train.heldout import answer_accuracy, predicted_tokens
from vlmforge.train.recipe import Recipe, StageConfig, save_recipe
from vlmforge.train.reuse import check_stage, clear_stage, stage_inputs
from vlmforge.train.schedule import epoch_steps, short_stage_warning
from vlmforge.train.trainable import configure_trainable, count_parameters, merge_lora
from vlmforge.train.trainer import MetricsLogger, SpeedMeter, StageProgress, VlmTrainer, truncate_logs_to_checkpoint

# transformers 5.2x renamed TrainingArguments.gradient_checkpointing to activation_checkpointing; the old name warns
# on every run, and the new one does not exist before the rename (we support transformers >= 5.0).
GROUPED_ORDER = "length_grouped_order.jsonl"
CHECKPOINTING_ARG = next(
    name
    for name in ("activation_checkpointing", "gradient_checkpointing")
    if name in {f.name for f in dataclasses.fields(TrainingArguments)}
)


def run_recipe(recipe: Recipe, resume: bool = False, force: bool = False, callbacks: list | None = None) -> Path:
    """Run every stage in order and return the last final/. A finished stage (its ``final/`` exists) is skipped
    when it was made from the same settings and inputs; made from others, it stops the run with the differences
    named (see train/reuse.py). ``force`` trains every stage again."""
    from accelerate import PartialState

    state = PartialState(cpu=launched_on_cpu())
    out = Path(recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    previous = recipe.model.init_from
    final = None
    for name, stage in recipe.stages.items():
        stage_dir = out / name
        final = stage_dir / "final"
        inputs = stage_inputs(recipe, name, stage, previous)
        if not force:
            check_stage(stage_dir, name, inputs)
        if (final / "config.json").exists() and not force:
            if state.is_main_process:
                print(f"[{name}] reused (same recipe and inputs): {final}")
        else:
            if state.is_main_process:
                if force:
                    clear_stage(stage_dir)
                save_recipe(recipe, out / "recipe.yaml")
                write_inputs(stage_dir, inputs)
            state.wait_for_everyone()
            run_stage(recipe, name, stage, previous, resume=resume, callbacks=callbacks)
        previous = str(final)
    return final


def load_starting_model(recipe: Recipe, previous: str | None):
    try:
        if previous:
            return load_checkpoint(resolve_model_path(previous, "starting checkpoint"))
        return get_architecture(recipe.model.architecture).assemble(recipe.model)
    except OSError as err:  # hub ids not found / not cached offline: transformers' message is a page of advice
        m = recipe.model
        what = previous or " and ".join(repr(p) for p in (m.vision_model, m.language_model) if p)
        raise ConfigError(f"cannot load {what}: {str(err).splitlines()[0]}") from err


def gradient_accumulation(stage: StageConfig, world_size: int) -> int:
    per_step = stage.per_device_batch_size * world_size
    if stage.global_batch_size % per_step:
        raise ConfigError(
            f"global_batch_size {stage.global_batch_size} is not divisible by per_device_batch_size "
            f"{stage.per_device_batch_size} x {world_size} processes"
        )
    return stage.global_batch_size // per_step


def launched_on_cpu() -> bool:
    """Whether this process should train on CPU with gloo, even when started as one of several processes.

    accelerate picks its multi-process CPU backend only when told ``cpu`` (``ACCELERATE_USE_CPU``, set by
    ``accelerate launch --cpu``). A job started by torchrun, or by accelerate's multi-process launcher, on a machine
    without an accelerator would otherwise run every process alone on the whole data set, racing on the same files.
    """
    from accelerate.utils import parse_flag_from_env

    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    has_accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    return parse_flag_from_env("ACCELERATE_USE_CPU") or (several and not has_accelerator)


def training_arguments(
    stage: StageConfig, stage_dir: Path, seed: int, world_size: int, use_cpu: bool = False, unused: bool = False
) -> TrainingArguments:
    """``unused``: some trainable parameters get no gradient in some batches (a unified model's vision copies in a
    text-only batch), which DDP must be told."""
    evaluate = bool(stage.eval_data.path)
    return TrainingArguments(
        output_dir=str(stage_dir),
        use_cpu=use_cpu,
        per_device_train_batch_size=stage.per_device_batch_size,
        gradient_accumulation_steps=gradient_accumulation(stage, world_size),
        learning_rate=stage.learning_rate,
        num_train_epochs=stage.epochs,
        max_steps=stage.max_steps,
        lr_scheduler_type=stage.lr_scheduler,
        warmup_steps=stage.warmup_ratio,  # a float < 1 is a fraction of the total steps
        weight_decay=stage.weight_decay,
        logging_steps=stage.logging_steps,
        save_steps=stage.save_steps,
        save_total_limit=stage.save_total_limit,
        seed=seed,
        data_seed=seed,
        bf16=stage.bf16,
        **{CHECKPOINTING_ARG: stage.gradient_checkpointing},
        dataloader_num_workers=stage.dataloader_workers,
        remove_unused_columns=False,  # our collator builds exactly the model's inputs
        report_to="none",
        disable_tqdm=False,  # else quieting transformers' logging turns the bar into printed log dicts
        dataloader_pin_memory=torch.cuda.is_available() and not use_cpu,  # pinning without a GPU only warns
        ddp_find_unused_parameters=unused,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=stage.eval_steps if evaluate else None,
        per_device_eval_batch_size=stage.per_device_batch_size,
        # Named, because the Trainer cannot infer it through a PEFT wrapper and would then skip the eval loss.
        label_names=["labels"],
    )


def run_stage(
    recipe: Recipe,
    name: str,
    stage: StageConfig,
    previous: str | None,
    resume: bool,
    callbacks: list | None = None,
) -> Path:
    from accelerate import PartialState

    started = time.perf_counter()
    stage_dir = Path(recipe.output_dir) / name
    last_checkpoint = get_last_checkpoint(str(stage_dir)) if stage_dir.exists() else None
    if last_checkpoint and not resume:
        raise ConfigError(
            f"{stage_dir} has checkpoints from an earlier run; pass --resume to continue, or --force to start over"
        )
    stage_dir.mkdir(parents=True, exist_ok=True)
    use_cpu = launched_on_cpu()
    state = PartialState(cpu=use_cpu)

    set_seed(recipe.seed)  # the projector's random init is part of the run: same recipe, same model
    model, processor = load_starting_model(recipe, previous)
    if previous is None and stage.tune == "lora" and stage.kind == "finetune" and state.is_main_process:
        previous = _save_lora_base(model, processor, stage_dir)
    flops = flop_model(model)
    codes = Path(recipe.output_dir) / "codes"  # a unified model's image codes, when the data names no folder
    data = build_training_data(stage, processor, model.config, recipe.on_error, flops, recipe.seed, codes)
    if state.is_main_process:
        print(data.plan.log_line(name))
        _warn_if_short(name, stage, len(data.dataset))
    heldout = None
    if stage.eval_data.path:
        # Padded whatever the stage trains on: a packed row would score several samples as one answer.
        eval_stage = dataclasses.replace(stage, data=stage.eval_data, batching="padding")
        heldout = build_training_data(eval_stage, processor, model.config, on_error=recipe.on_error, codes_dir=codes)
    restore_cache = disable_kv_cache(model)  # packed rows rely on position_ids-derived masks, which a cache disables
    model = configure_trainable(model, stage)
    unused = bool(getattr(model.config, "copied_layers", None))  # a unified model with vision copies
    args = training_arguments(stage, stage_dir, recipe.seed, state.num_processes, use_cpu=use_cpu, unused=unused)

    order_log = stage_dir / "data_order.jsonl"
    resume_from = last_checkpoint if resume else None
    _start_logs(stage_dir, resume_from, state)
    sampler = _sampler(data, stage, stage_dir, recipe.seed, state)
    speed = SpeedMeter(flops)

    trainer = VlmTrainer(
        model=model,
        args=args,
        train_dataset=data.dataset,
        eval_dataset=heldout.dataset if heldout else None,
        data_collator=data.collator,
        compute_metrics=answer_accuracy if heldout else None,
        preprocess_logits_for_metrics=predicted_tokens if heldout else None,
        # Saved into every checkpoint-N too, so an intermediate checkpoint is a model `vlmforge eval` / `chat` load.
        processing_class=processor,
        stage=stage,
        data_order_log=order_log,
        sampler=sampler,
        speed=speed,
        callbacks=[MetricsLogger(stage_dir / "metrics.jsonl"), *(callbacks or [])],
    )
    if not console.verbose():
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(StageProgress(f"[{name}]"))
    result = trainer.train(resume_from_checkpoint=resume_from)
    final_eval = trainer.evaluate() if heldout else {}
    restore_cache()  # the saved model generates with its cache, as it was before training
    final = export_stage(trainer, processor, stage, stage_dir, previous_or_base=previous)

    if state.is_main_process:
        seconds = time.perf_counter() - started
        print(stage_summary(name, trainer.state.global_step, seconds, result.metrics, final_eval, final))
        _write_stage_manifest(recipe, name, stage, trainer, data, heldout, {**result.metrics, **final_eval}, seconds,
                              final, speed)  # fmt: skip
    return final


def _save_lora_base(model, processor, stage_dir: Path) -> str:
    """A LoRA adapter needs its base on disk to be merged or reloaded later: save it as STAGE/base."""
    base = str(stage_dir / "base")
    model.save_pretrained(base)
    processor.save_pretrained(base)
    model.name_or_path = base
    return base


def _warn_if_short(name: str, stage: StageConfig, records: int) -> None:
    """Say so, with the numbers, when a stage is too short to learn more than the answer prior."""
    steps = stage.max_steps if stage.max_steps > 0 else epoch_steps(records, stage.global_batch_size, stage.epochs)
    warning = short_stage_warning(name, records, stage.global_batch_size, steps)
    if warning:
        print(warning)


def _start_logs(stage_dir: Path, resume_from: str | None, state) -> None:
    """A resumed stage keeps its logs up to its checkpoint; a new one starts them afresh."""
    if resume_from and state.is_main_process:
        truncate_logs_to_checkpoint(stage_dir, int(Path(resume_from).name.split("-")[-1]))
    elif state.is_main_process:
        for log in ("data_order.jsonl", "metrics.jsonl", GROUPED_ORDER):
            (stage_dir / log).unlink(missing_ok=True)
    state.wait_for_everyone()


def _sampler(data, stage: StageConfig, stage_dir: Path, seed: int, state) -> LengthGroupedSampler | None:
    """Length-grouped batching's sampler (its order recorded by the main process); the Trainer's for the rest."""
    if data.plan.mode != "length_grouped":
        return None
    # Buckets of one optimizer step's samples on every process, as transformers' group_by_length does.
    bucket = stage.per_device_batch_size * state.num_processes
    record = stage_dir / GROUPED_ORDER if state.is_main_process else None
    return LengthGroupedSampler(data.lengths, bucket, seed, record=record)


def _write_stage_manifest(
    recipe: Recipe, name: str, stage: StageConfig, trainer: VlmTrainer, data, heldout, metrics: dict, seconds: float,
    final: Path, speed: SpeedMeter,
) -> None:  # fmt: skip
    write_manifest(
        Path(recipe.output_dir) / name,
        stage=name,
        recipe=recipe.to_dict(),
        inputs=[p for p in (stage.data.path, stage.data.text_only_path, stage.data.generation_path) if p],
        counts={
            "samples": len(data.dataset),
            "steps": trainer.state.global_step,
            "epochs": trainer.state.epoch,
            "processes": trainer.args.world_size,
            "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
            "real_tokens_this_process": trainer.real_tokens,
            **{f"params_{k}": v for k, v in count_parameters(trainer.model).items()},
            **data.stats,
            **(
                {"eval_records": heldout.stats["records"], "eval_rejected": heldout.stats["rejected"]}
                if heldout
                else {}
            ),
        },
        rejections=data.rejections.as_dict(),
        metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)},
        wall_seconds=seconds,
        outputs={"final": str(final)},
        batching=data.plan.manifest(),
        speed=speed.report(),
    )


def stage_summary(name: str, steps: int, seconds: float, train: dict, held_out: dict, final: Path) -> str:
    """The line printed when a stage ends: steps, time, losses, held-out answer accuracy, where the model went."""
    parts = [f"[{name}] {steps} steps in {seconds:.0f} s"]
    if "train_loss" in train:
        parts.append(f"loss {train['train_loss']:.4g}")
    if "eval_loss" in held_out:
        parts.append(f"held-out loss {held_out['eval_loss']:.4g}")
    if "eval_answer_exact_match" in held_out:
        parts.append(f"held-out answers right {held_out['eval_answer_exact_match']:.3g}")
    return ", ".join(parts) + f" -> {final}"


def export_stage(trainer: VlmTrainer, processor, stage: StageConfig, stage_dir: Path, previous_or_base) -> Path:
    """Save the stage's result as a plain LLaVA checkpoint; a LoRA stage also keeps its adapter."""
    final = stage_dir / "final"
    if stage.kind == "finetune" and stage.tune == "lora":
        adapter = stage_dir / "adapter"
        trainer.save_model(str(adapter))
        if trainer.is_world_process_zero():
            processor.save_pretrained(adapter)
            _point_adapter_at_base(adapter, trainer.model)
            merge_lora(adapter, final)
    else:
        trainer.save_model(str(final))
        if trainer.is_world_process_zero():
            processor.save_pretrained(final)
    trainer.accelerator.wait_for_everyone()
    return final


def _point_adapter_at_base(adapter: Path, model) -> None:
    """PEFT records the base model's name_or_path; make sure it is the checkpoint this stage started from."""
    import json

    config_path = adapter / "adapter_config.json"
    config = json.loads(config_path.read_text())
    base = model.get_base_model().name_or_path
    if base and Path(base).exists():
        config["base_model_name_or_path"] = str(Path(base).resolve())
    config_path.write_text(json.dumps(config, indent=2))
