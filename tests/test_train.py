import json

import pytest
import torch
import yaml
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback

from vlmforge.errors import ConfigError
from vlmforge.train.recipe import load_recipe
from vlmforge.train.stage import run_recipe

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Images of one flat colour, captions, and single-turn colour questions."""
    root = tmp_path_factory.mktemp("data")
    captions, questions = [], []
    for i in range(16):
        name, rgb = list(COLOURS.items())[i % 4]
        Image.new("RGB", (32, 32), rgb).save(root / f"{i}.png")
        captions.append(
            {
                "id": f"c{i}",
                "image": f"{i}.png",
                "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": f"a {name} square"}],
            }
        )
        questions.append(
            {
                "id": f"q{i}",
                "image": f"{i}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat colour is it?"},
                    {"from": "gpt", "value": name},
                ],
            }
        )
    for name, rows in (("captions.jsonl", captions), ("qa.jsonl", questions)):
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def finetune_stage(data, **finetune):
    """The tiny finetune stage on the colour questions: 16 samples, global batch 4 (2 per device), 4 steps/epoch."""
    return {
        "data": {"path": str(data / "qa.jsonl")},
        "learning_rate": 1e-3,
        "global_batch_size": 4,
        "per_device_batch_size": 2,
        "epochs": 1,
        "logging_steps": 1,
        "save_steps": 2,
        **finetune,
    }


def write_recipe(path, data, parts, out, **finetune):
    vision, lm = parts
    finetune_cfg = finetune_stage(data, **finetune)
    recipe = {
        "name": "tiny",
        "output_dir": str(out),
        "seed": 3,
        "model": {"vision_model": str(vision), "language_model": str(lm)},
        "stages": {
            "pretrain": {
                "data": {"path": str(data / "captions.jsonl")},
                "learning_rate": 1e-3,
                "global_batch_size": 8,
                "per_device_batch_size": 4,
                "logging_steps": 1,
                "save_steps": 100,
            },
            "finetune": finetune_cfg,
        },
    }
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_unknown_recipe_key_lists_the_valid_keys(tmp_path, tiny_data, tiny_parts):
    path = write_recipe(tmp_path / "r.yaml", tiny_data, tiny_parts, tmp_path / "out")
    with pytest.raises(
        ConfigError, match=r"unknown recipe key stages.finetune.learning_rat.*valid keys.*learning_rate"
    ):
        load_recipe(path, ["stages.finetune.learning_rat=1"])
    recipe = load_recipe(path, ["stages.finetune.learning_rate=5e-4", "stages.finetune.batching=packing"])
    assert recipe.stages["finetune"].learning_rate == 5e-4 and recipe.stages["finetune"].batching == "packing"
    assert recipe.stages["pretrain"].kind == "pretrain" and recipe.stages["finetune"].kind == "finetune"
    swapped = yaml.safe_load(path.read_text())
    swapped["stages"] = dict(reversed(list(swapped["stages"].items())))
    (tmp_path / "swapped.yaml").write_text(yaml.safe_dump(swapped, sort_keys=False))
    with pytest.raises(ConfigError, match="cannot follow a finetune stage"):
        load_recipe(tmp_path / "swapped.yaml")
    for cache in ("image_cache_mb", "token_cache_mb"):
        with pytest.raises(ConfigError, match=rf"stages\.finetune\.data\.{cache} must be >= 0"):
            load_recipe(path, [f"stages.finetune.data.{cache}=-1"])


def _state(path):
    return {k: v.clone() for k, v in AutoModelForImageTextToText.from_pretrained(path).state_dict().items()}


def test_two_stage_training_trains_the_right_parts(tmp_path, tiny_data, tiny_parts):
    out = tmp_path / "run"
    final = run_recipe(load_recipe(write_recipe(tmp_path / "r.yaml", tiny_data, tiny_parts, out)))
    base = _state(out / "pretrain" / "final")
    # Stage 1 moved only the projector: vision tower and LM equal the pretrained parts.
    from transformers import AutoModel, AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(tiny_parts[1]).state_dict()
    vision = AutoModel.from_pretrained(tiny_parts[0]).state_dict()
    assert torch.equal(
        base["model.language_model.embed_tokens.weight"][: lm["model.embed_tokens.weight"].shape[0]],
        lm["model.embed_tokens.weight"],
    )
    tower = {k.removeprefix("model.vision_tower."): v for k, v in base.items() if k.startswith("model.vision_tower.")}
    assert tower.keys() <= vision.keys() and all(torch.equal(v, vision[k]) for k, v in tower.items())
    tuned = _state(final)
    changed = {k.split(".")[1] for k in tuned if not torch.equal(tuned[k], base[k])}
    assert "multi_modal_projector" in changed and "language_model" in changed
    assert not any(not torch.equal(tuned[k], base[k]) for k in tuned if "vision_tower" in k)
    manifest = json.loads((out / "finetune" / "manifest.json").read_text())
    assert manifest["counts"]["steps"] == 4 and manifest["counts"]["samples"] == 16
    losses = [json.loads(line).get("loss") for line in (out / "finetune" / "metrics.jsonl").read_text().splitlines()]
    assert any(loss is not None for loss in losses)


class CrashAfter(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("simulated crash")


def test_resume_replays_the_same_steps_and_data_order(tmp_path, tiny_data, tiny_parts):
    extra = {"epochs": 2, "save_steps": 3}
    straight = run_recipe(
        load_recipe(write_recipe(tmp_path / "a.yaml", tiny_data, tiny_parts, tmp_path / "a", **extra))
    )
    recipe = load_recipe(write_recipe(tmp_path / "b.yaml", tiny_data, tiny_parts, tmp_path / "b", **extra))
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, callbacks=[CrashAfter(5)])  # checkpoint-3 exists, steps 4-5 are lost
    checkpoint = tmp_path / "b" / "finetune" / "checkpoint-3"
    assert checkpoint.exists()
    # An intermediate checkpoint is a complete model folder: the processor (with its chat template) is saved too.
    assert AutoProcessor.from_pretrained(checkpoint).chat_template
    with pytest.raises(ConfigError, match="--resume"):
        run_recipe(recipe)
    resumed = run_recipe(recipe, resume=True)

    def order(run):
        return (run / "finetune" / "data_order.jsonl").read_text()

    assert order(tmp_path / "a") == order(tmp_path / "b")
    logged_steps = [
        json.loads(line)["step"] for line in (tmp_path / "b" / "finetune" / "metrics.jsonl").read_text().splitlines()
    ]
    assert logged_steps[:-1] == list(range(1, 9))  # no step logged twice after the resume (last line: summary)
    steps = [
        json.loads((r / "finetune" / "manifest.json").read_text())["counts"]["steps"]
        for r in (tmp_path / "a", tmp_path / "b")
    ]
    assert steps == [8, 8]
    pickles = [p for p in (tmp_path / "b").rglob("*") if p.suffix in (".pt", ".pth", ".bin", ".pkl")]
    assert not pickles, f"checkpoints must hold no pickles: {pickles}"
    a, b = _state(straight), _state(resumed)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_weight_decay_reaches_the_weight_matrices_and_spares_biases_and_norms(tiny_llava):
    from vlmforge.train.recipe import StageConfig
    from vlmforge.train.trainable import configure_trainable, parameter_groups

    stage = StageConfig(kind="finetune", tune="full", weight_decay=0.1)
    model = configure_trainable(AutoModelForImageTextToText.from_pretrained(tiny_llava), stage)
    decay_of = {id(p): group["weight_decay"] for group in parameter_groups(model, stage) for p in group["params"]}
    trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    assert len(decay_of) == len(trained)
    for name, param in trained:
        assert decay_of[id(param)] == (0.1 if param.ndim >= 2 else 0.0), name
    assert {decay_of[id(p)] for _, p in trained} == {0.0, 0.1}
