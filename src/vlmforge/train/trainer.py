"""HF Trainer glue: per-group learning rates, the LM head only where labels are, a JSONL metrics log, and a record
of the data order.

The Trainer already does distributed training (accelerate), checkpoints, resume, schedules and progress bars;
this subclass adds only what LLaVA-style recipes need on top.
"""

from __future__ import annotations

import inspect
import json
import os
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import ProgressCallback, Trainer, TrainerCallback

from vlmforge.models.kept_logits import causal_lm_loss, head_positions, supervised_positions
from vlmforge.train import checkpoint_state
from vlmforge.train.flops import FlopModel, batch_flops, matmul_peak
from vlmforge.train.recipe import StageConfig
from vlmforge.train.trainable import parameter_groups

SAMPLE_IDS = "sample_ids"  # batch key carrying dataset indices; popped before the forward pass
REAL_TOKENS = "real_tokens"  # batch key carrying the samples' own token count; popped before the forward pass


class VlmTrainer(Trainer):
    def __init__(
        self,
        *args,
        stage: StageConfig,
        data_order_log: Path | None = None,
        sampler: torch.utils.data.Sampler | None = None,
        speed: SpeedMeter | None = None,
        **kwargs,
    ):
        self.stage = stage
        self.data_order_log = data_order_log
        self.real_tokens = 0
        self.sampler, self.speed = sampler, speed
        super().__init__(*args, **kwargs)
        if speed is not None:
            self.add_callback(speed)
        # The loss is taken here, from the logits the model returns (every position, or the kept ones in training).
        self.compute_loss_func = self._causal_lm_loss
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        self.keeps_logits = "logits_to_keep" in inspect.signature(base.forward).parameters

    def _get_train_sampler(self, train_dataset=None):
        """The stage's own sampler (length-grouped batching) for the training set; the Trainer's otherwise."""
        if self.sampler is not None and (train_dataset is None or train_dataset is self.train_dataset):
            return self.sampler
        return super()._get_train_sampler(train_dataset)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The evaluation loop keeps only the logits. A model's output carries more: transformers 5.2x's LLaVA also
        returns the vision tower's output (a ModelOutput with None fields) as ``image_hidden_states``, which
        accelerate cannot pad across processes, and held-out accuracy needs nothing but the logits."""
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        if isinstance(logits, tuple):
            logits = logits[0]  # outputs keep their field order: logits come first once the loss is taken out
        return loss, logits, labels

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            optimizer_kwargs.pop("lr", None)  # each group carries its own
            self.optimizer = optimizer_cls(parameter_groups(self.model, self.stage), **optimizer_kwargs)
        return self.optimizer

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Resume full-model checkpoints through ``from_pretrained``.

        transformers 5 saves LLaVA in the llava-hf key layout (``language_model.model.*``) but the Trainer reloads
        checkpoints with a raw non-strict ``load_state_dict``: every key misses and the run silently restarts from
        the stage's initial weights. ``from_pretrained`` applies the key mapping; strict loading proves it fit.
        PEFT checkpoints store adapter keys and take the Trainer's own path; so do FSDP runs, whose Trainer passes
        the FSDP-wrapped model (no ``from_pretrained``) and reloads its own sharded/full FSDP state.
        """
        model = model or self.model
        if hasattr(model, "peft_config") or self.is_fsdp_enabled:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        loaded = type(model).from_pretrained(resume_from_checkpoint, dtype=next(model.parameters()).dtype)
        model.load_state_dict(loaded.state_dict(), strict=True)

    # --- checkpoint state without pickles (see checkpoint_state.py); DeepSpeed/FSDP keep their own formats ---
    def _own_state_format(self) -> bool:
        return not (self.is_deepspeed_enabled or self.is_fsdp_enabled)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if not self._own_state_format():
            return super()._save_optimizer_and_scheduler(output_dir)
        if self.args.should_save:
            checkpoint_state.save_optimizer(self.optimizer, self.lr_scheduler, output_dir)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint and self._own_state_format() and checkpoint_state.has_optimizer_state(checkpoint):
            checkpoint_state.load_optimizer(self.optimizer, self.lr_scheduler, checkpoint, self.args.device)
        else:
            super()._load_optimizer_and_scheduler(checkpoint)

    def _save_rng_state(self, output_dir: str) -> None:
        checkpoint_state.save_rng_state(output_dir, self.args.process_index, self.args.world_size)

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if checkpoint and not checkpoint_state.load_rng_state(
            checkpoint, self.args.process_index, self.args.world_size
        ):
            super()._load_rng_state(checkpoint)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict)
        # The Trainer pickles its TrainingArguments next to every save; the resolved recipe.yaml records them.
        args_file = os.path.join(output_dir or self.args.output_dir, "training_args.bin")
        if self.args.should_save and os.path.exists(args_file):
            os.remove(args_file)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        sample_ids = inputs.pop(SAMPLE_IDS, None)
        real_tokens = inputs.pop(REAL_TOKENS, None)
        if not model.training:  # an evaluation batch: not part of the training data order or token count
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if sample_ids is not None and self.data_order_log is not None and self.is_world_process_zero():
            # Global step of the update this micro-batch belongs to: resume must replay the same order.
            with self.data_order_log.open("a") as log:
                log.write(json.dumps({"step": self.state.global_step, "ids": sample_ids.tolist()}) + "\n")
        labels = inputs.get("labels")
        keep = None
        if labels is not None:
            self.real_tokens += int((labels != -100).sum())
            if self.keeps_logits:  # the same loss and gradients, without the head's work on unlabelled positions
                keep = supervised_positions(labels)
                inputs = {**inputs, "logits_to_keep": keep}
        if self.speed is not None and real_tokens is not None:
            self.speed.add(int(real_tokens), inputs, None if keep is None else head_positions(keep, len(labels)))
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    @staticmethod
    def _causal_lm_loss(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        return causal_lm_loss(outputs["logits"], labels, num_items_in_batch)


class SpeedMeter(TrainerCallback):
    """Training speed as ``bench/train_throughput.py`` counts it: real tokens and model FLOPs of the batches
    trained (vlmforge.train.flops), over the time of the optimizer steps (forward, backward, update; loading
    batches, logging, evaluating and saving left out), and a matmul peak measured when training starts."""

    def __init__(self, flops: FlopModel):
        self.flops = flops
        self.real_tokens, self.model_flops, self.seconds, self.peak = 0, 0.0, 0.0, None
        self._started: float | None = None

    def add(self, real_tokens: int, batch, head_positions: int | None = None) -> None:
        self.real_tokens += real_tokens
        self.model_flops += batch_flops(self.flops, batch, head_positions)

    def on_train_begin(self, args, state, control, **kwargs):
        self.peak = matmul_peak()

    def on_step_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def report(self) -> dict[str, float]:
        """Speed of this process: real tokens/s, model FLOP/s and their fraction of the measured peak."""
        seconds = max(self.seconds, 1e-9)
        flops_per_s = self.model_flops / seconds
        return {
            "real_tokens_per_s": self.real_tokens / seconds,
            "model_flops_per_s": flops_per_s,
            "matmul_peak_flops_per_s": self.peak or 0.0,
            "fraction_of_peak": flops_per_s / self.peak if self.peak else 0.0,
            "timed_seconds": self.seconds,
        }


class MetricsLogger(TrainerCallback):
    """Append every log event (loss, lr, grad norm, tokens/s) as one JSON line — easy to plot or tail."""

    def __init__(self, path: Path):
        self.path = path
        self.started = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, "elapsed_s": time.perf_counter() - self.started}
        record.update({k: float(v) if isinstance(v, torch.Tensor) else v for k, v in logs.items()})
        with self.path.open("a") as out:
            out.write(json.dumps(record) + "\n")


class StageProgress(ProgressCallback):
    """One bar per training stage, showing the latest loss, in place of the Trainer's default progress output:
    a printed dict per log event and a second bar for every held-out evaluation (metrics.jsonl keeps both)."""

    def __init__(self, desc: str):
        super().__init__()
        self.desc = desc

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.training_bar = tqdm(total=state.max_steps, desc=self.desc, unit="step", dynamic_ncols=True)
        self.current_step = 0

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        pass

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{float(logs['loss']):.4g}", refresh=False)


def truncate_logs_to_checkpoint(stage_dir: Path, resume_step: int) -> None:
    """Drop log entries past the checkpoint we resume from: a killed run may have logged a few more steps.

    ``data_order.jsonl`` records the step an update *starts* at (kept: < resume_step); ``metrics.jsonl`` the step
    it *ended* at (kept: <= resume_step).
    """
    for name, keep in (("data_order.jsonl", lambda s: s < resume_step), ("metrics.jsonl", lambda s: s <= resume_step)):
        path = stage_dir / name
        if path.exists():
            lines = [line for line in path.read_text().splitlines() if line and keep(json.loads(line)["step"])]
            path.write_text("".join(line + "\n" for line in lines))
