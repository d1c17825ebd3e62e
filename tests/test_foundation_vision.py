"""The tiny vision tower: its losses (pooled and dense) and its saved form."""

from __future__ import annotations

from dataclasses import replace

import torch
from transformers import AutoImageProcessor, AutoModel, CLIPVisionModelWithProjection

from test_foundation import CELLS, TINY_VISION, scenes
from vlmforge.shapes.foundation.vision import (
    BACKGROUND,
    VisionSpec,
    embed_texts,
    image_processor,
    patch_embeddings,
    patch_targets,
    sigmoid_loss,
    train_vision_tower,
)


def test_sigmoid_loss_prefers_matching_pairs():
    emb = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    positives = torch.eye(4, dtype=torch.bool)
    log_t, bias = torch.tensor(2.3), torch.tensor(-1.0)
    assert sigmoid_loss(emb, emb, positives, log_t, bias) < sigmoid_loss(emb, emb.roll(1, 0), positives, log_t, bias)


def test_vision_tower_learns_and_loads_with_plain_transformers(tmp_path, text_model):
    data = scenes(64)
    model, log = train_vision_tower(
        [d[0] for d in data], [(d[1], d[2]) for d in data], text_model, TINY_VISION, seed=0, progress=False
    )
    assert log.final_loss < log.first_loss
    model.save_pretrained(tmp_path)
    from vlmforge.shapes.foundation.vision import image_processor

    image_processor(TINY_VISION).save_pretrained(tmp_path)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    pixels = processor(images=[d[0] for d in data[:3]], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (3, 3, 64, 64)
    patches = AutoModel.from_pretrained(tmp_path)(pixel_values=pixels).last_hidden_state
    assert patches.shape == (3, 1 + (64 // 21) ** 2, 32)
    embeds = CLIPVisionModelWithProjection.from_pretrained(tmp_path)(pixel_values=pixels).image_embeds
    assert embeds.shape == (3, 384)


def test_patch_targets_put_each_object_in_the_patch_of_its_box_centre():
    spec = VisionSpec(image_size=64, patch_size=21)
    regions = [[([0.7, 0.35, 0.95, 0.6], "a red circle"), ([0.0, 0.0, 0.2, 0.2], "a blue square")], []]
    phrases, targets = patch_targets(regions, spec)
    assert phrases == [BACKGROUND, "a red circle", "a blue square"]
    # centre (0.825, 0.475) * 64 = (52.8, 30.4) -> column 2, row 1 -> patch 5; (0.1, 0.1) -> patch 0.
    assert targets.tolist() == [[2, 0, 0, 0, 0, 1, 0, 0, 0], [0] * 9]


def test_dense_loss_teaches_patch_tokens_their_object(text_model):
    data = scenes(96, seed=1)
    regions = []
    for _, short, detailed in data:
        row, col = divmod(CELLS.index(detailed.split(" at the ")[1]), 3)
        regions.append(
            [([(col * 21 + 3) / 64, (row * 21 + 3) / 64, (col * 21 + 18) / 64, (row * 21 + 18) / 64], short)]
        )
    spec = replace(TINY_VISION, epochs=30)
    images, captions = [d[0] for d in data], [(d[1], d[2]) for d in data]

    def patch_accuracy(model) -> float:
        phrases, targets = patch_targets(regions, spec)
        pixels = image_processor(spec)(images=images, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            patches = patch_embeddings(model, model(pixel_values=pixels).last_hidden_state)
        nearest = (patches @ embed_texts(phrases, text_model).T).argmax(-1)
        return float((nearest == targets).float().mean())

    dense, _ = train_vision_tower(images, captions, text_model, spec, seed=0, progress=False, regions=regions)
    pooled, _ = train_vision_tower(images, captions, text_model, spec, seed=0, progress=False)
    # Every patch (objects and background) nearest to its own phrase: the dense loss does it, the pooled one not.
    assert patch_accuracy(dense) > 0.9 > patch_accuracy(pooled)
