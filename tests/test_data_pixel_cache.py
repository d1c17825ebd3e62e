"""Processed images kept between epochs: read once, the same values, within the budget, and no part of a stage's
identity."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

import vlmforge.data.dataset as dataset_module
from vlmforge.data.dataset import ConversationDataset
from vlmforge.data.pixel_cache import PixelCache
from vlmforge.train.recipe import DataConfig, Recipe, StageConfig
from vlmforge.train.reuse import stage_inputs


def _record(image: str) -> dict:
    return {
        "image": image,
        "conversations": [{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "red"}],
    }


@pytest.fixture
def images(tmp_path):
    Image.new("RGB", (32, 32), (255, 0, 0)).save(tmp_path / "a.png")
    Image.effect_noise((32, 32), 64).convert("RGB").save(tmp_path / "b.png")
    return tmp_path


def test_the_cache_keeps_values_until_its_budget_is_spent():
    cache, loads = PixelCache(max_bytes=2 * 4 * 10), []  # room for two tensors of ten float32

    def get(key):
        return cache.get(key, lambda: loads.append(key) or torch.full((10,), float(ord(key))))

    for key in ("a", "b", "c", "a", "b", "c"):
        assert torch.equal(get(key), torch.full((10,), float(ord(key))))
    assert loads == ["a", "b", "c", "c"] and cache.used == 80  # "c" came after the budget was spent: never kept
    with pytest.raises(ValueError, match="budget"):
        PixelCache(-1)


@pytest.mark.parametrize(("budget", "reads"), [(2**20, 2), (0, 6)])
def test_a_dataset_reads_each_image_once_with_a_cache(tiny_llava, images, monkeypatch, budget, reads):
    processor = AutoProcessor.from_pretrained(tiny_llava)
    records = [_record("a.png"), _record("b.png")]
    plain = ConversationDataset(records, processor, image_folder=images, max_length=128)
    expected = [plain[i]["pixel_values"] for i in range(2)]
    opened = []
    original = dataset_module.load_image
    monkeypatch.setattr(
        dataset_module, "load_image", lambda path, *a, **k: opened.append(path) or original(path, *a, **k)
    )
    cached = ConversationDataset(records, processor, image_folder=images, max_length=128, image_cache_bytes=budget)
    for _ in range(3):  # three epochs
        for i in range(2):
            assert torch.equal(cached[i]["pixel_values"], expected[i])
    assert len(opened) == reads


def test_the_cache_budget_is_not_part_of_a_stage_s_identity():
    def inputs(**data):
        stage = StageConfig(data=DataConfig(path="", **data))
        return stage_inputs(Recipe(stages={"finetune": stage}), "finetune", stage, None)

    assert inputs(image_cache_mb=0) == inputs(image_cache_mb=4096)
    assert inputs(max_samples=5) != inputs()
