"""The hub-model recipes in recipes/ parse, say what Bunny says, and docs/recipes.md documents every recipe key."""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path

import pytest

from vlmforge.train.recipe import (
    DataConfig,
    LoraConfig,
    MixConfig,
    ModelConfig,
    Recipe,
    StageConfig,
    UnifiedModelConfig,
    load_recipe,
)
from vlmforge.train.stage import gradient_accumulation, training_arguments

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("bunny-*.yaml"))  # the Genixer recipes: test_genixer_train.py


def test_the_hub_recipes_are_there():
    names = {p.stem for p in RECIPES}
    assert {"bunny-siglip-qwen2.5-0.5b", "bunny-siglip-qwen2.5-0.5b-lora", "bunny-clip-phi2"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses_without_its_data_or_models_present(path):
    recipe = load_recipe(path)  # validates keys and values; paths are only opened when a stage runs
    assert recipe.name == path.stem and list(recipe.stages) == ["pretrain", "finetune"]
    for stage in recipe.stages.values():
        assert not Path(stage.data.path).exists()  # placeholders: parsing really did not look at them
        for gpus in (1, 2, 4, 8):  # the global batch works out on any usual GPU count
            assert gradient_accumulation(stage, gpus) * stage.per_device_batch_size * gpus == stage.global_batch_size
        assert stage.bf16 and stage.max_length == 2048 and stage.lr_scheduler == "cosine" and stage.warmup_ratio == 0.03
    pretrain, finetune = recipe.stages["pretrain"], recipe.stages["finetune"]
    assert pretrain.kind == "pretrain" and pretrain.global_batch_size == 256
    assert finetune.kind == "finetune" and finetune.global_batch_size == 128 and finetune.gradient_checkpointing
    assert recipe.model.projector == "mlp2x_gelu" and recipe.model.vision_feature_layer == -2
    if finetune.tune == "lora":
        assert (finetune.lora.r, finetune.lora.alpha, finetune.learning_rate, finetune.lora.projector_lr) == (
            128,
            256,
            2e-4,
            2e-5,
        )
    else:
        assert finetune.learning_rate == 2e-5
    assert (
        load_recipe(path, ["stages.finetune.data.path=/elsewhere.jsonl"]).stages["finetune"].data.path
        == "/elsewhere.jsonl"
    )


def test_siglip_qwen_recipe_names_the_bunny_parts():
    recipe = load_recipe(ROOT / "recipes" / "bunny-siglip-qwen2.5-0.5b.yaml")
    assert recipe.model.vision_model == "google/siglip-so400m-patch14-384"
    assert recipe.model.language_model == "Qwen/Qwen2.5-0.5B-Instruct"
    assert recipe.stages["pretrain"].learning_rate == 1e-3 and recipe.stages["finetune"].tune == "full"


def test_docs_document_every_recipe_key():
    doc = (ROOT / "docs" / "recipes.md").read_text()
    documented = set(re.findall(r"^\| `([A-Za-z0-9_.]+)`", doc, flags=re.M))
    sections = {
        "": Recipe,
        "model.": ModelConfig,
        "stages.NAME.": StageConfig,
        "stages.NAME.data.": DataConfig,
        "stages.NAME.lora.": LoraConfig,
        "model.unified.": UnifiedModelConfig,
        "stages.NAME.data.mix.": MixConfig,
    }
    nested = {"model", "stages", "data", "lora", "unified", "mix"}
    expected = {
        prefix + f.name for prefix, cls in sections.items() for f in dataclasses.fields(cls) if f.name not in nested
    }
    assert expected - documented == set(), "undocumented recipe keys"
    assert documented - expected == set(), "docs/recipes.md lists keys the recipe does not have"


def test_overrides_may_use_the_recipe_variables(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model: {vision_model: '${foundation}/vision', language_model: '${foundation}/lm'}\n"
        "stages:\n  finetune:\n    data: {path: '${world}/train/conversations.jsonl'}\n"
    )
    variables = {"world": "/w", "foundation": "/f"}
    loaded = load_recipe(recipe, ["stages.finetune.data.path=${world}/train/instruct.jsonl"], variables=variables)
    assert loaded.stages["finetune"].data.path == "/w/train/instruct.jsonl"
    assert loaded.model.vision_model == "/f/vision"
    with pytest.raises(Exception, match=r"unknown variable \$\{records\} \(known here: foundation, world\)"):
        load_recipe(recipe, ["stages.finetune.data.path=${records}/x.jsonl"], variables=variables)


@pytest.mark.parametrize("checkpointing", [True, False])
def test_training_arguments_carry_checkpointing_without_deprecation_warnings(tmp_path, checkpointing):
    stage = load_recipe(RECIPES[0]).stages["finetune"]
    stage = dataclasses.replace(stage, gradient_checkpointing=checkpointing, bf16=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # a renamed argument must not be passed by its old name
        args = training_arguments(stage, tmp_path, seed=0, world_size=1, use_cpu=True)
    assert args.gradient_checkpointing is checkpointing


@pytest.mark.parametrize("name", ["shapes-bunny", "shapes-unicorn"])
def test_lab_recipes_keep_the_batching_their_numbers_were_measured_with(name):
    # auto would group or pack the lab's stages; the published demo numbers come from padded, shuffled batches.
    path = ROOT / "src" / "vlmforge" / "shapes" / "recipes" / f"{name}.yaml"
    variables = {key: "/x" for key in ("world", "foundation", "records", "embeddings")}
    recipe = load_recipe(path, variables=variables)
    assert {stage.batching for stage in recipe.stages.values()} == {"padding"}
