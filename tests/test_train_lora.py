"""A finetune stage with ``tune: lora``: what trains, what is written, merging, loading elsewhere, resuming."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback

from train_helpers import COLOURS, CrashAfter, finetune_only_recipe, state_dict, tiny_data, write_yaml  # noqa: F401
from vlmforge.cli import main
from vlmforge.models.assemble import IMAGE_TOKEN
from vlmforge.train.recipe import load_recipe
from vlmforge.train.stage import run_recipe

LR, PROJECTOR_LR, R, ALPHA = 1e-3, 3e-4, 4, 8
LORA_STAGE = {
    "tune": "lora",
    "lora": {"r": R, "alpha": ALPHA, "projector_lr": PROJECTOR_LR},
    "learning_rate": LR,
    "epochs": 2,
    "save_steps": 2,
    "gradient_checkpointing": True,
}


class OptimizerGroups(TrainerCallback):
    """Records, at the start of training, each optimizer group's learning rate and the parameters in it."""

    def __init__(self):
        self.groups: list[dict] = []

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        names = {id(p): n for n, p in model.named_parameters()}
        self.groups = [
            {"lr": g.get("initial_lr", g["lr"]), "names": [names[id(p)] for p in g["params"]]}
            for g in optimizer.param_groups
        ]


def lora_recipe(tmp, data, parts, out):
    recipe = finetune_only_recipe(out, data, parts, **LORA_STAGE)
    recipe["stages"]["finetune"]["data"]["max_samples"] = 8  # 2 steps an epoch, 4 in all: a checkpoint every 2
    return load_recipe(write_yaml(tmp / f"{out.name}.yaml", recipe))


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_data, tiny_parts):  # noqa: F811
    tmp = tmp_path_factory.mktemp("lora")
    groups = OptimizerGroups()
    final = run_recipe(lora_recipe(tmp, tiny_data, tiny_parts, tmp / "straight"), callbacks=[groups])
    return {"tmp": tmp, "stage": final.parent, "final": final, "groups": groups.groups}


def test_lora_stage_writes_adapter_and_merged_model(lora_run):
    stage = lora_run["stage"]
    assert (stage / "adapter" / "adapter_config.json").exists() and (
        stage / "adapter" / "processor_config.json"
    ).exists()
    assert (stage / "final" / "config.json").exists() and (stage / "final" / "processor_config.json").exists()
    config = json.loads((stage / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == R and config["lora_alpha"] == ALPHA and config["modules_to_save"] == ["multi_modal_projector"]
    assert os.path.samefile(config["base_model_name_or_path"], stage / "base")  # the base the adapter was trained on
    manifest = json.loads((stage / "manifest.json").read_text())
    assert (
        manifest["counts"]["steps"] == 4 and manifest["counts"]["params_trainable"] < manifest["counts"]["params_total"]
    )


def test_only_lora_weights_and_projector_change(lora_run):
    stage = lora_run["stage"]
    adapter = load_file(stage / "adapter" / "adapter_model.safetensors")
    # The adapter holds LoRA factors of LM Linears and the projector; nothing of the vision tower or lm_head.
    kinds = {"lora" if ".lora_" in k else "projector" if "multi_modal_projector" in k else k for k in adapter}
    assert kinds == {"lora", "projector"}
    assert not any("vision_tower" in k or "lm_head" in k for k in adapter)
    assert all(".language_model." in k for k in adapter if ".lora_" in k)

    base, merged = state_dict(stage / "base"), state_dict(stage / "final")
    scale = ALPHA / R
    lora_layers = {k.split(".lora_")[0].removeprefix("base_model.model.") for k in adapter if ".lora_A." in k}
    assert any("q_proj" in name for name in lora_layers) and any("down_proj" in name for name in lora_layers)
    for key in merged:
        layer = key.removesuffix(".weight")
        if layer in lora_layers:  # merged = base + (alpha / r) * B @ A, exactly the trained adapter folded in
            a = adapter[f"base_model.model.{layer}.lora_A.weight"]
            b = adapter[f"base_model.model.{layer}.lora_B.weight"]
            assert b.abs().max() > 0, f"{layer}: LoRA B never trained"
            torch.testing.assert_close(merged[key], base[key] + scale * b @ a, atol=1e-6, rtol=0)
        elif "multi_modal_projector" in key:
            assert torch.equal(merged[key], adapter[f"base_model.model.{key}"]) and not torch.equal(
                merged[key], base[key]
            )
        else:  # vision tower, embeddings, norms, lm_head, LoRA-less biases: untouched
            assert torch.equal(merged[key], base[key]), key


def test_projector_learning_rate_lands_in_the_optimizer(lora_run):
    by_lr: dict[float, list[str]] = {}
    for group in lora_run["groups"]:
        by_lr.setdefault(group["lr"], []).extend(group["names"])
    assert set(by_lr) == {LR, PROJECTOR_LR}
    assert by_lr[PROJECTOR_LR] and all("multi_modal_projector" in n for n in by_lr[PROJECTOR_LR])
    assert by_lr[LR] and all(".lora_" in n for n in by_lr[LR])


def _inputs(processor):
    image = Image.new("RGB", (32, 32), COLOURS["blue"])
    return processor(images=image, text=f"{IMAGE_TOKEN}\nWhat colour is it?", return_tensors="pt")


def test_merged_logits_equal_adapter_logits_with_an_image(lora_run):
    from peft import PeftModel

    stage = lora_run["stage"]
    processor = AutoProcessor.from_pretrained(stage / "final")
    inputs = _inputs(processor)
    assert (
        "pixel_values" in inputs
        and (inputs["input_ids"] == processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)).sum() > 1
    )
    base = AutoModelForImageTextToText.from_pretrained(stage / "base")
    with torch.no_grad():
        plain = base(**inputs).logits
        adapted = PeftModel.from_pretrained(base, stage / "adapter").eval()(**inputs).logits
        merged = AutoModelForImageTextToText.from_pretrained(stage / "final").eval()(**inputs).logits
    assert (adapted - plain).abs().max() > 1e-3  # the adapter really changes the output...
    torch.testing.assert_close(merged, adapted, atol=1e-4, rtol=0)  # ...and merging keeps that change


def test_merged_model_loads_without_vlmforge(lora_run, tmp_path):
    script = textwrap.dedent("""
        import json, sys
        import torch
        from PIL import Image
        from transformers import AutoModelForImageTextToText, AutoProcessor
        model = AutoModelForImageTextToText.from_pretrained(sys.argv[1])
        processor = AutoProcessor.from_pretrained(sys.argv[1])
        inputs = processor(images=Image.new("RGB", (32, 32)), text="<image>\\nWhat colour?", return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits
        print(json.dumps({"class": type(model).__name__, "finite": bool(torch.isfinite(logits).all()),
                          "vlmforge_imported": any(m.split(".")[0] == "vlmforge" for m in sys.modules)}))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", script, str(lora_run["final"])],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"class": "LlavaForConditionalGeneration", "finite": True, "vlmforge_imported": False}


def test_merge_lora_cli_reproduces_the_stage_merge(lora_run, tmp_path, capsys):
    out = tmp_path / "merged"
    assert main(["merge-lora", "--adapter", str(lora_run["stage"] / "adapter"), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    ours, stage_merge = state_dict(out), state_dict(lora_run["final"])
    assert ours.keys() == stage_merge.keys() and all(torch.equal(ours[k], stage_merge[k]) for k in ours)
    assert (out / "processor_config.json").exists()
    assert main(["merge-lora", "--adapter", str(tmp_path), "--out", str(tmp_path / "x")]) == 1  # not an adapter
    assert "adapter_config.json" in capsys.readouterr().err


def test_lora_checkpoint_resumes_to_the_same_weights(lora_run, tiny_data, tiny_parts):  # noqa: F811
    tmp = lora_run["tmp"]
    recipe = lora_recipe(tmp, tiny_data, tiny_parts, tmp / "crashed")
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, callbacks=[CrashAfter(3)])  # checkpoint-2 (an adapter checkpoint) exists; step 3 is lost
    checkpoint = tmp / "crashed" / "finetune" / "checkpoint-2"
    assert (checkpoint / "adapter_model.safetensors").exists() and not (checkpoint / "model.safetensors").exists()
    resumed = run_recipe(recipe, resume=True)

    straight_stage, resumed_stage = lora_run["stage"], resumed.parent
    assert (straight_stage / "data_order.jsonl").read_text() == (resumed_stage / "data_order.jsonl").read_text()
    steps = [json.loads((s / "manifest.json").read_text())["counts"]["steps"] for s in (straight_stage, resumed_stage)]
    assert steps == [4, 4]
    a, b = state_dict(lora_run["final"]), state_dict(resumed)
    assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=0) for k in a)
