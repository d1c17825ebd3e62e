"""From a stage's data config to what the Trainer consumes: dataset, collator, stats, rejections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset

from vlmforge.data.collate import PaddingCollator
from vlmforge.data.dataset import ConversationDataset
from vlmforge.data.packing import PackedDataset, PackingCollator
from vlmforge.data.records import Rejections
from vlmforge.train.embedding_data import open_embeddings
from vlmforge.train.recipe import StageConfig
from vlmforge.train.trainer import SAMPLE_IDS


@dataclass
class TrainingData:
    dataset: Dataset
    collator: Any
    stats: dict[str, Any] = field(default_factory=dict)
    rejections: Rejections = field(default_factory=Rejections)


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
        return collated


def build_training_data(stage: StageConfig, processor, model_config, on_error: str = "raise") -> TrainingData:
    """Pretrain stages use the "plain" template (image then caption); finetune stages the chat template."""
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
        )
        if stage.data.max_samples is not None and path == stage.data.path:
            part.items = part.items[: stage.data.max_samples]
        # Encode every record once before training (a tokenizer pass, no images): a record that cannot be
        # encoded (too_long, ...) fails the run before its first step, or with on_error=skip is dropped and
        # counted once, not once per epoch, so the sample count and schedule see only what trains.
        part.compute_lengths()
        parts.append(part)

    pad_id = processor.tokenizer.pad_token_id
    stats: dict[str, Any] = {"records": sum(len(p) for p in parts)}
    if stage.packing:
        packed = [PackedDataset(p, stage.max_length) for p in parts]
        for key in ("rows", "real_tokens"):
            stats[f"packing_{key}"] = sum(p.stats()[key] for p in packed)
        stats["packing_real_token_fraction"] = stats["packing_real_tokens"] / max(
            1, stats["packing_rows"] * stage.max_length
        )
        dataset, inner = _concat(packed), PackingCollator(pad_id)
    else:
        dataset, inner = _concat(parts), PaddingCollator(pad_id)
    stats["rejected"] = rejections.total
    return TrainingData(_Indexed(dataset), _IndexedCollator(inner), stats, rejections)


def _concat(parts: list[Dataset]) -> Dataset:
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)
