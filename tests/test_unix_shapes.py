"""The shapes world's parts of Uni-X: the image read back into its scene, the exact GenEval (100 % on clean
renders, and failing what it should), and the k-means patch tokenizer's round trip."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from PIL import Image

from vlmforge.errors import ConfigError
from vlmforge.models.image_tokenizer import ImageTokenizer
from vlmforge.shapes.foundation.patch_tokenizer import (
    PatchTokenizer,
    PatchTokenizerSpec,
    reconstruction,
    train_patch_tokenizer,
)
from vlmforge.shapes.world.config import COLOR_RGB, WorldConfig
from vlmforge.shapes.world.geneval import CATEGORIES, check, make_items, score_images
from vlmforge.shapes.world.readback import read_scene
from vlmforge.shapes.world.render import render_scene
from vlmforge.shapes.world.scene import Scene, canonical_key, sample_scenes


@pytest.mark.parametrize(
    "config",
    [
        WorldConfig(train_size=150, test_size=30),
        WorldConfig(train_size=60, test_size=10, image_size=96, grid=4, max_objects=7, background_noise=20),
    ],
)
def test_renders_read_back_to_their_scenes(config):
    scenes = sample_scenes(config)
    for scene in scenes["train"] + scenes["test"]:
        assert canonical_key(read_scene(render_scene(scene, config).image, config)) == scene.key


def test_geneval_scores_clean_renders_100_percent():
    config = WorldConfig()
    items = make_items(config, per_category=15, seed=3)
    assert {i.category for i in items} == set(CATEGORIES) and len(items) == 90
    result = score_images(items, [render_scene(i.scene, config).image for i in items], config)
    assert result["overall"] == 1.0 and all(v == 1.0 for v in result["categories"].values())


def _item(category, config):
    return next(i for i in make_items(config, per_category=3, seed=1) if i.category == category)


def _objects_of(scene: Scene):
    return [replace(o) for o in scene.objects]


def test_geneval_fails_what_it_should():
    config = WorldConfig()
    colors = _item("colors", config)
    [obj] = colors.scene.objects
    other = next(c for c in config.colors if c != obj.color)
    assert not check([replace(obj, color=other)], colors)[0]
    assert not check([], colors)[0]
    counting = _item("counting", config)
    n = counting.include[0].count
    extra = replace(counting.scene.objects[0], row=-1)  # one more of the same shape, anywhere
    assert check(_objects_of(counting.scene), counting)[0]
    assert not check([*counting.scene.objects, extra], counting)[0]
    assert not check(counting.scene.objects[: n - 1], counting)[0]
    position = _item("position", config)
    a = next(o for o in position.scene.objects if o.shape == position.include[0].shape)
    b = next(o for o in position.scene.objects if o.shape == position.include[1].shape)
    swapped = [replace(a, row=b.row, col=b.col), replace(b, row=a.row, col=a.col)]
    assert check([a, b], position)[0] and not check(swapped, position)[0]


def test_geneval_needs_a_world_that_can_hold_its_categories():
    with pytest.raises(ConfigError, match="needs 2 shapes"):
        make_items(WorldConfig(shapes=("circle",)), per_category=2)


@pytest.fixture(scope="module")
def world_images():
    config = WorldConfig(train_size=300, test_size=40)
    scenes = sample_scenes(config)
    render = lambda split: [render_scene(s, config).image for s in scenes[split]]  # noqa: E731
    return config, render("train"), render("test")


def test_patch_tokenizer_round_trip(world_images, tmp_path):
    config, train, test = world_images
    palette = [config.background, *(COLOR_RGB[c] for c in config.colors)]
    tokenizer = train_patch_tokenizer(train, palette, PatchTokenizerSpec(codebook_size=64, iterations=5))
    assert isinstance(tokenizer, ImageTokenizer)
    assert tokenizer.grid == (16, 16) and tokenizer.codebook_size == 64
    codes = tokenizer.encode(test)
    assert codes.shape == (40, 256) and codes.dtype == torch.long
    images = tokenizer.decode(codes)
    assert images[0].size == (64, 64) and images[0].mode == "RGB"
    assert reconstruction(tokenizer, test)["exact_pixels"] > 0.9
    loaded = PatchTokenizer.load(tokenizer.save(tmp_path / "tok"))
    assert torch.equal(loaded.encode(test), codes)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 64\)"):
        tokenizer.decode(torch.full((1, 256), 64))
    with pytest.raises(ValueError, match=r"codes must be \[images, 256\]"):
        tokenizer.decode(torch.zeros(1, 255, dtype=torch.long))
    with pytest.raises(ValueError, match="images must be 64x64 px"):
        tokenizer.encode([Image.new("RGB", (32, 32))])
    with pytest.raises(ConfigError, match="not a saved patch tokenizer"):
        PatchTokenizer.load(tmp_path)
