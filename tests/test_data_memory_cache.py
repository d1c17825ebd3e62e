"""Processed images and token ids kept between epochs: made once, the same values, within the budget, and no part
of a stage's identity."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

import vlmforge.data.dataset as dataset_module
from vlmforge.data.dataset import ConversationDataset
from vlmforge.data.memory_cache import MemoryCache
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
    cache, loads = MemoryCache(max_bytes=2 * 4 * 10), []  # room for two tensors of ten float32

    def get(key):
        return cache.get(key, lambda: loads.append(key) or torch.full((10,), float(ord(key))))

    for key in ("a", "b", "c", "a", "b", "c"):
        assert torch.equal(get(key), torch.full((10,), float(ord(key))))
    assert loads == ["a", "b", "c", "c"] and cache.used == 80  # "c" came after the budget was spent: never kept
    with pytest.raises(ValueError, match="budget"):
        MemoryCache(-1)
    pairs = MemoryCache(max_bytes=2 * 8 * 3)  # a tuple's tensors count together
    pairs.get("x", lambda: (torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long)))
    assert pairs.used == 48
    pairs.clear()
    assert pairs.used == 0 and pairs.get("y", lambda: torch.ones(1)).item() == 1.0


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


@pytest.mark.parametrize(("budget", "encodes"), [(2**20, 2), (0, 6)])
def test_a_dataset_tokenises_each_record_once_with_a_cache(tiny_llava, images, monkeypatch, budget, encodes):
    processor = AutoProcessor.from_pretrained(tiny_llava)
    records = [_record("a.png"), _record("b.png")]
    plain = ConversationDataset(records, processor, image_folder=images, max_length=128)
    expected = [(plain[i]["input_ids"], plain[i]["labels"]) for i in range(2)]
    calls = []
    original = dataset_module.encode_conversation
    monkeypatch.setattr(
        dataset_module, "encode_conversation", lambda record, *a, **k: calls.append(1) or original(record, *a, **k)
    )
    cached = ConversationDataset(records, processor, image_folder=images, max_length=128, token_cache_bytes=budget)
    for _ in range(3):  # three epochs
        for i in range(2):
            item = cached[i]
            assert torch.equal(item["input_ids"], expected[i][0]) and torch.equal(item["labels"], expected[i][1])
    assert len(calls) == encodes


def test_replacing_the_records_drops_their_cached_tokens(tiny_llava, images):
    processor = AutoProcessor.from_pretrained(tiny_llava)
    reworded = _record("a.png")
    reworded["conversations"][0]["value"] = "<image>\nWhich colour is the picture?"
    data = ConversationDataset([_record("a.png")], processor, image_folder=images, token_cache_bytes=2**20)
    before = data[0]["input_ids"]
    data.items = [(data.items[0][0], reworded)]  # as a stage's rewording or max_samples replaces them
    after = data[0]["input_ids"]
    assert len(after) > len(before)
    fresh = ConversationDataset([reworded], processor, image_folder=images)
    assert torch.equal(after, fresh[0]["input_ids"])


def test_the_cache_budget_is_not_part_of_a_stage_s_identity():
    def inputs(**data):
        stage = StageConfig(data=DataConfig(path="", **data))
        return stage_inputs(Recipe(stages={"finetune": stage}), "finetune", stage, None)

    assert inputs(image_cache_mb=0) == inputs(image_cache_mb=4096)
    assert inputs(token_cache_mb=0) == inputs(token_cache_mb=4096)
    assert inputs(max_samples=5) != inputs()
