"""From a stage's data config to what the Trainer consumes: dataset, collator, stats, rejections."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset

from vlmforge.data.collate import PaddingCollator
from vlmforge.data.dataset import ConversationDataset
from vlmforge.data.records import Rejections
from vlmforge.data.reword import reword_items
from vlmforge.train.batching import BatchingPlan, plan_batching
from vlmforge.train.embedding_data import open_embeddings
from vlmforge.train.flops import FlopModel
from vlmforge.train.recipe import StageConfig
from vlmforge.train.trainer import REAL_TOKENS, SAMPLE_IDS
from vlmforge.train.unified_data import SOURCES, build_mix

UNIFIED = "vlmforge_unified"


@dataclass
class TrainingData:
    dataset: Dataset
    collator: Any
    stats: dict[str, Any] = field(default_factory=dict)
    rejections: Rejections = field(default_factory=Rejections)
    lengths: list[int] = field(default_factory=list)  # tokens of each sample, in dataset order
    plan: BatchingPlan | None = None


class _Indexed(Dataset):
    """Carries each item's index to the collator, so the trainer can log the data order."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        return index, self.base[index]


@dataclass
class _IndexedCollator:
    inner: Any

    def __call__(self, batch: list[tuple[int, Any]]) -> dict[str, torch.Tensor]:
        collated = self.inner([item for _, item in batch])
        collated[SAMPLE_IDS] = torch.tensor([index for index, _ in batch])
        collated[REAL_TOKENS] = torch.tensor(sum(len(item["input_ids"]) for _, item in batch if item is not None))
        return collated


def build_training_data(
    stage: StageConfig,
    processor,
    model_config,
    on_error: str = "raise",
    flops: FlopModel | None = None,
    seed: int = 0,
    codes_dir: Path | None = None,
) -> TrainingData:
    """Pretrain stages use the "plain" template (image then caption); finetune stages the chat template; a unified
    model's stage takes its mix (:func:`unified_training_data`). The batching is the stage's, or for ``auto`` the
    one :func:`plan_batching` predicts cheapest with ``flops`` (padding when no ``flops`` are given)."""
    if getattr(model_config, "model_type", None) == UNIFIED:
        return unified_training_data(stage, processor, model_config, on_error, flops, seed, codes_dir)
    rejections = Rejections()
    template = "plain" if stage.kind == "pretrain" else "chat"
    embeddings = open_embeddings(stage.data.embeddings, model_config)
    paths = [(stage.data.path, stage.data.image_folder)]
    if stage.data.text_only_path:
        paths.append((stage.data.text_only_path, None))
    parts = []
    for path, image_folder in paths:
        part = ConversationDataset(
            path,
            processor,
            image_folder=image_folder,
            template=template,
            max_length=stage.max_length,
            on_error=on_error,
            rejections=rejections,
            embeddings=embeddings,
            image_cache_bytes=stage.data.image_cache_mb * 2**20,
            token_cache_bytes=stage.data.token_cache_mb * 2**20,
        )
        if stage.data.max_samples is not None and path == stage.data.path:
            part.items = part.items[: stage.data.max_samples]
        if stage.data.reword_questions:
            part.items = reword_items(part.items, seed)
        # Encode every record once before training (a tokenizer pass, no images): a record that cannot be
        # encoded (too_long, ...) fails the run before its first step, or with on_error=skip is dropped and
        # counted once, not once per epoch, so the sample count and schedule see only what trains.
        part.compute_lengths()
        parts.append(part)

    lengths = [n for part in parts for n in part.compute_lengths()]
    plan = _plan(stage, parts, lengths, model_config, flops, seed)
    pad_id = processor.tokenizer.pad_token_id
    inner = plan.packing_collator(pad_id, stage.max_length) if plan.mode == "packing" else PaddingCollator(pad_id)
    stats: dict[str, Any] = {"records": len(lengths), "rejected": rejections.total}
    return TrainingData(_Indexed(_concat(parts)), _IndexedCollator(inner), stats, rejections, lengths, plan)


def unified_training_data(
    stage: StageConfig,
    processor,
    model_config,
    on_error: str = "raise",
    flops: FlopModel | None = None,
    seed: int = 0,
    codes_dir: Path | None = None,
) -> TrainingData:
    """The mixed samples of a unified model's stage, batched by any of the project's modes: packed rows keep
    their samples apart inside the model (position ids restart at 0 per sample, in shared and split layers)."""
    rejections = Rejections()
    codes_dir = Path(stage.data.codes or codes_dir or "codes")
    dataset = build_mix(stage.data, processor, model_config, stage.max_length, codes_dir, seed, on_error, rejections)
    sizes = dataset.records
    lengths = dataset.lengths()
    images = sum(1 for slot in dataset.slots if slot.source != "text")
    if flops is None:
        plan = BatchingPlan("padding" if stage.batching == "auto" else stage.batching, stage.batching, "dense", None)
    else:
        attention = model_config.get_text_config()._attn_implementation
        plan = plan_batching(stage.batching, lengths, stage.per_device_batch_size, flops, attention, images, seed)
    pad_id = processor.tokenizer.pad_token_id
    inner = plan.packing_collator(pad_id, stage.max_length) if plan.mode == "packing" else None
    stats: dict[str, Any] = {
        "records": sum(sizes.values()),
        "rejected": rejections.total,
        **{f"records_{source}": sizes.get(source, 0) for source in SOURCES},
        **{f"samples_{source}": sum(s.source == source for s in dataset.slots) for source in SOURCES},
        "samples_unconditional": sum(s.unconditional for s in dataset.slots),
    }
    collator = _IndexedCollator(inner or PaddingCollator(pad_id))
    return TrainingData(_Indexed(dataset), collator, stats, rejections, lengths, plan)


def _plan(stage: StageConfig, parts, lengths: list[int], model_config, flops: FlopModel | None, seed: int):
    if flops is None:
        return BatchingPlan("padding" if stage.batching == "auto" else stage.batching, stage.batching, "dense", None)
    # One image (or embedding) per record with one: their cost is the same in every mode, so an estimate will do.
    images = sum(
        1 for part in parts for _, record in part.items if record.get("image") or record.get("image_embedding")
    )
    attention = model_config.get_text_config()._attn_implementation
    return plan_batching(stage.batching, lengths, stage.per_device_batch_size, flops, attention, images, seed)


def _concat(parts: list[Dataset]) -> Dataset:
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)
