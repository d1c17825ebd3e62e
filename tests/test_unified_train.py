"""Training a unified model through recipes: the mix's ratios and caption dropout, the sample masks, packing
against padding, resume, and a short run that lowers the loss and saves the image tokenizer with the model."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from test_train import CrashAfter
from unified_train_helpers import tiny_unified_setup, unified_recipe
from vlmforge.data.chat import IGNORE_INDEX
from vlmforge.data.collate import PaddingCollator
from vlmforge.data.packing import BatchPackingCollator
from vlmforge.errors import ConfigError
from vlmforge.models.architectures import get_architecture, load_checkpoint
from vlmforge.models.image_tokenizer import load_image_tokenizer
from vlmforge.models.unified.prompts import INSTRUCTION
from vlmforge.train.data import build_training_data
from vlmforge.train.recipe import MixConfig, load_recipe, recipe_from_dict
from vlmforge.train.stage import gradient_accumulation, run_recipe, training_arguments
from vlmforge.train.unified_data import mix_slots


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_unified_setup(tmp_path_factory.mktemp("unified_train"))


def test_the_mix_follows_its_ratios_and_drops_one_caption_in_ten():
    mix = MixConfig(understanding=0.5, generation=0.3, text=0.2, samples=6000, unconditional_rate=0.1)
    slots = mix_slots({"understanding": 40, "generation": 30, "text": 7}, mix, seed=1)
    shares = Counter(slot.source for slot in slots)
    for source, weight in (("understanding", 0.5), ("generation", 0.3), ("text", 0.2)):
        assert abs(shares[source] / len(slots) - weight) < 0.02
    generation = [slot for slot in slots if slot.source == "generation"]
    assert abs(sum(slot.unconditional for slot in generation) / len(generation) - 0.1) < 0.015
    assert not any(slot.unconditional for slot in slots if slot.source != "generation")
    # Each source cycles through all its records before repeating one.
    uses = Counter(slot.item for slot in slots if slot.source == "text")
    assert max(uses.values()) - min(uses.values()) <= 1 and len(uses) == 7
    assert mix_slots({"understanding": 40, "generation": 30, "text": 7}, mix, seed=1) == slots
    assert mix_slots({"understanding": 40, "generation": 30, "text": 7}, mix, seed=2) != slots
    default = mix_slots({"understanding": 40, "generation": 30}, replace(mix, samples=None, text=0.0), seed=1)
    assert len(default) == 70 and {slot.source for slot in default} == {"understanding", "generation"}


def _stage_data(setup, tmp_path, **stage):
    recipe = recipe_from_dict(unified_recipe(setup, tmp_path / "run", **stage))
    model, processor = get_architecture("unified").assemble(recipe.model)
    stage = recipe.stages["finetune"]
    return model, processor, build_training_data(stage, processor, model.config, seed=recipe.seed)


def test_codebook_init_reaches_the_model_from_a_recipe(setup, tmp_path):
    recipe = recipe_from_dict(unified_recipe(setup, tmp_path / "run"))
    recipe.model.unified.code_init = "codebook"
    model, processor = get_architecture("unified").assemble(recipe.model)
    centroids = processor.image_tokenizer().code_vectors()
    codes = model.get_input_embeddings().weight.detach()[model.config.text_vocab_size :]
    off = ~torch.eye(len(codes), dtype=torch.bool)  # the codes keep the centroids' distances, up to one scale
    ratio = torch.cdist(codes, codes)[off] / torch.cdist(centroids, centroids)[off]
    assert float(ratio.std() / ratio.mean()) < 0.05
    bad = unified_recipe(setup, tmp_path / "bad")
    bad["model"]["unified"]["code_init"] = "random"
    with pytest.raises(ConfigError, match="model.unified.code_init must be one of mean, codebook; got 'random'"):
        recipe_from_dict(bad)


def test_samples_mask_what_they_must_not_learn(setup, tmp_path):
    model, processor, data = _stage_data(setup, tmp_path, data={**unified_recipe(setup, tmp_path)["stages"][
        "finetune"]["data"], "mix": {"understanding": 1, "generation": 1, "text": 1, "samples": 300}})  # fmt: skip
    config, tokenizer = model.config, processor.tokenizer
    instruction = tokenizer(INSTRUCTION, add_special_tokens=False)["input_ids"]
    seen = Counter()
    for _, sample in data.dataset:
        ids, labels = sample["input_ids"], sample["labels"]
        trained = [t for t, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX]
        if config.vision_start_token_id not in ids:  # text only: every token
            seen["text"] += 1
            assert trained == ids
        elif ids[0] == config.unconditional_token_id:  # unconditional text-to-image: no caption at all
            seen["unconditional"] += 1
            assert ids[1] == config.vision_start_token_id and trained == ids[2:]
        elif trained[-1] == config.vision_end_token_id:  # text-to-image: codes and end, not caption + instruction
            seen["generation"] += 1
            start = ids.index(config.vision_start_token_id)
            assert ids[start - len(instruction) : start] == instruction and trained == ids[start + 1 :]
            assert all(t >= config.text_vocab_size for t in trained[:-1])
        else:  # image-to-text: only the answer (and the template's end of turn)
            seen["understanding"] += 1
            assert all(t < config.text_vocab_size for t in trained)
            assert tokenizer.decode(trained).strip().startswith(("red", "blue"))
    assert set(seen) == {"text", "unconditional", "generation", "understanding"}
    assert data.stats["samples_unconditional"] == seen["unconditional"]
    # The codes were encoded once into safetensors shards and are what the samples hold.
    assert list((setup["root"] / "codes").glob("codes-*.safetensors"))


def test_packed_rows_give_the_padded_batch_loss(setup, tmp_path):
    model, processor, data = _stage_data(setup, tmp_path)
    samples = [data.dataset[i][1] for i in range(8)]
    padded = PaddingCollator(processor.tokenizer.pad_token_id)(samples)
    packed = BatchPackingCollator(processor.tokenizer.pad_token_id, 128)(samples)
    assert packed["input_ids"].shape[0] < len(samples) and "attention_mask" not in packed
    model.eval()
    with torch.no_grad():  # without a KV cache, as the stage trains: position resets then separate the samples
        padded_loss, packed_loss = model(**padded, use_cache=False).loss, model(**packed, use_cache=False).loss
    assert torch.allclose(padded_loss, packed_loss, atol=1e-5)


def test_a_short_run_lowers_the_loss_and_resumes_the_same_way(setup, tmp_path):
    straight = run_recipe(recipe_from_dict(unified_recipe(setup, tmp_path / "a", save_steps=5)))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "a/finetune/metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]  # fmt: skip
    assert losses[-1] < losses[0] - 0.5
    model, processor = load_checkpoint(str(straight))
    assert model.config.arm == "two_end" and processor.tokenizer.chat_template
    assert load_image_tokenizer(straight / "image_tokenizer").codebook_size == model.config.codebook_size
    recipe = recipe_from_dict(unified_recipe(setup, tmp_path / "b", save_steps=5))
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, callbacks=[CrashAfter(7)])  # checkpoint-5 exists, steps 6-7 are lost
    assert (tmp_path / "b/finetune/checkpoint-5/image_tokenizer/image_tokenizer.json").is_file()
    resumed = run_recipe(recipe, resume=True)
    assert (tmp_path / "a/finetune/data_order.jsonl").read_text() == (
        tmp_path / "b/finetune/data_order.jsonl"
    ).read_text()
    other = load_checkpoint(str(resumed))[0]
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), name


def test_a_unified_recipe_names_its_missing_sources(setup, tmp_path):
    recipe = unified_recipe(setup, tmp_path)
    recipe["stages"]["finetune"]["data"].pop("generation_path")
    with pytest.raises(ConfigError, match="mix.generation is 0.4 but data.generation_path"):
        recipe_from_dict(recipe)
    recipe = unified_recipe(setup, tmp_path)
    recipe["model"]["unified"].pop("image_tokenizer")
    with pytest.raises(ConfigError, match="image_tokenizer is required"):
        recipe_from_dict(recipe)
    with pytest.raises(ConfigError, match="kind: finetune with tune: full"):
        recipe_from_dict(unified_recipe(setup, tmp_path, tune="lora"))


@pytest.mark.parametrize("batching", ["packing", "length_grouped"])
def test_every_batching_mode_trains_a_unified_stage(setup, tmp_path, batching):
    run_recipe(recipe_from_dict(unified_recipe(setup, tmp_path, batching=batching, max_steps=3)))
    manifest = json.loads((tmp_path / "finetune/manifest.json").read_text())
    assert manifest["batching"]["mode"] == batching and manifest["counts"]["steps"] == 3
    assert manifest["counts"]["records_generation"] == 24


def test_the_real_recipe_and_the_shapes_recipe_validate_without_their_models(tmp_path):
    root = Path(__file__).resolve().parents[1]
    real = load_recipe(root / "recipes" / "unix-qwen2.5-1.5b-chameleon.yaml")
    unified, stage = real.model.unified, real.stages["finetune"]
    assert real.model.architecture == "unified" and real.model.language_model == "Qwen/Qwen2.5-1.5B"
    assert (unified.arm, unified.encode_layers, unified.decode_layers) == ("two_end", 9, 5)
    assert stage.data.mix.unconditional_rate == 0.1 and stage.batching == "packing"
    for gpus in (1, 2, 4, 8):
        assert gradient_accumulation(stage, gpus) * stage.per_device_batch_size * gpus == stage.global_batch_size
    # A model with vision copies needs DDP told about the parameters a text-only batch leaves without gradient.
    args = training_arguments(dataclasses.replace(stage, bf16=False), tmp_path, 0, 1, use_cpu=True, unused=True)
    assert args.ddp_find_unused_parameters is True
    shapes = root / "src" / "vlmforge" / "shapes" / "recipes" / "shapes-unix.yaml"
    names = ("world", "foundation", "image_tokenizer", "codes", "text")
    lab = load_recipe(shapes, variables={key: f"/{key}" for key in names})
    assert lab.model.language_model == "/foundation/lm" and lab.model.unified.image_tokenizer == "/image_tokenizer"
    assert lab.stages["finetune"].data.generation_path == "/world/train/captions.jsonl"
