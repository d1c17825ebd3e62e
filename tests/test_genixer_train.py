"""Training the generator is an ordinary recipe; Genixer's synthetic stage trains the projector alone on chat data
(``tune: projector``)."""

from __future__ import annotations

import pytest

from vlmforge.errors import ConfigError


def test_projector_only_finetune_stage(tiny_llava):
    from transformers import LlavaForConditionalGeneration

    from vlmforge.train.recipe import StageConfig
    from vlmforge.train.trainable import configure_trainable

    model = configure_trainable(
        LlavaForConditionalGeneration.from_pretrained(tiny_llava), StageConfig(tune="projector")
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("multi_modal_projector" in n for n in trainable)
    with pytest.raises(ConfigError, match="projector alone"):
        configure_trainable(model, StageConfig(tune="projector", unfreeze_vision=True))


def test_the_generator_trains_with_an_ordinary_recipe(tmp_path, tiny_llava):
    import json

    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText

    from test_genixer_parse import labeled
    from vlmforge.synth.genixer.stages import build_stage
    from vlmforge.synth.genixer.tasks import TASKS
    from vlmforge.train.recipe import load_recipe
    from vlmforge.train.stage import run_recipe

    Image.new("RGB", (32, 32), "red").save(tmp_path / "img.png")
    data = tmp_path / "labeled.jsonl"
    data.write_text("".join(json.dumps(labeled(t, f"r{i}")) + "\n" for i, t in enumerate(TASKS)))
    build_stage(data, tmp_path / "build")
    recipe = tmp_path / "generator.yaml"
    stage = {"data": {"path": str(tmp_path / "build" / "generator.jsonl"), "image_folder": str(tmp_path)}}
    stage.update(tune="projector", learning_rate=1e-2, global_batch_size=2, per_device_batch_size=2, max_steps=2)
    recipe.write_text(
        json.dumps(
            {"name": "gen", "output_dir": str(tmp_path / "run"), "model": {"init_from": str(tiny_llava)},
             "stages": {"finetune": {**stage, "save_steps": 100, "logging_steps": 1}}}
        )
    )  # fmt: skip
    final = run_recipe(load_recipe(recipe))
    before = AutoModelForImageTextToText.from_pretrained(tiny_llava).state_dict()
    after = AutoModelForImageTextToText.from_pretrained(final).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("multi_modal_projector" in k for k in changed)


@pytest.mark.parametrize("name", ["genixer-llava-1.5-7b", "genixer-student-llava-1.5-7b"])
def test_the_hub_recipes_parse(name):
    from pathlib import Path

    from vlmforge.train.recipe import load_recipe
    from vlmforge.train.stage import gradient_accumulation

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / f"{name}.yaml")
    assert recipe.name == name and recipe.model.init_from == "llava-hf/llava-1.5-7b-hf"
    for stage in recipe.stages.values():
        assert stage.kind == "finetune" and stage.bf16 and not Path(stage.data.path).exists()
        for gpus in (1, 2, 4, 8):
            assert gradient_accumulation(stage, gpus) * stage.per_device_batch_size * gpus == stage.global_batch_size
    tunes = [s.tune for s in recipe.stages.values()]
    assert tunes == (["full"] if name == "genixer-llava-1.5-7b" else ["projector", "full"])
