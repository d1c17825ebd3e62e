"""Data-parallel training with 2 CPU processes (gloo), and the accelerate configs vlmforge ships."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import launch_command_parser

from train_helpers import finetune_only_recipe, state_dict, tiny_data, write_yaml  # noqa: F401
from vlmforge.train.recipe import load_recipe
from vlmforge.train.stage import gradient_accumulation

CONFIGS = resources.files("vlmforge") / "accelerate_configs"
SHIPPED = ("ddp", "fsdp", "zero2", "zero3", "multi_cpu")


def _free_port() -> int:
    with socket.socket() as sock:  # other test runs may share the machine: never rely on the default port
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_accelerate_config_parses(name):
    path = Path(str(CONFIGS / f"{name}.yaml"))
    config = load_config_from_file(str(path))  # accelerate's own loader: rejects unknown top-level keys
    raw = yaml.safe_load(path.read_text())
    launch_options = set(vars(launch_command_parser().parse_args(["train.py"])))
    # `accelerate launch` copies every nested key onto its options (fsdp_config keys gain an fsdp_ prefix) without
    # checking them: a typo there would be silently ignored, so check each names a real launch option.
    for section, prefix in (("fsdp_config", "fsdp_"), ("deepspeed_config", "")):
        for key in raw.get(section, {}):
            assert (key if key.startswith(prefix) else prefix + key) in launch_options, f"{name}: {section}.{key}"
    expected = {
        "ddp": "MULTI_GPU",
        "multi_cpu": "MULTI_GPU",
        "fsdp": "FSDP",
        "zero2": "DEEPSPEED",
        "zero3": "DEEPSPEED",
    }
    assert config.distributed_type.value == expected[name] and config.num_processes >= 2
    if name == "fsdp":
        assert config.fsdp_config["fsdp_sharding_strategy"] == "FULL_SHARD" and config.mixed_precision == "bf16"
        assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    if name.startswith("zero"):
        assert config.deepspeed_config["zero_stage"] == int(name[-1])
        # Left to the Trainer, so the recipe's global batch decides the accumulation.
        assert "gradient_accumulation_steps" not in config.deepspeed_config
    if name == "multi_cpu":
        assert config.use_cpu and config.num_processes == 2


def test_two_cpu_processes_share_one_training_run(tmp_path, tiny_data, tiny_llava):  # noqa: F811
    out = tmp_path / "run"
    recipe_path = write_yaml(tmp_path / "r.yaml", finetune_only_recipe(out, tiny_data, init_from=tiny_llava))
    stage = load_recipe(recipe_path).stages["finetune"]
    assert gradient_accumulation(stage, 1) == 2 and gradient_accumulation(stage, 2) == 1

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("ACCELERATE_USE_CPU", None)  # the config alone must be enough
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(CONFIGS / "multi_cpu.yaml"),
        "--main_process_port",
        str(_free_port()),
        "-m",
        "vlmforge.cli",
        "train",
        str(recipe_path),
    ]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("final model:") == 2  # both ranks ran the command to its end

    manifest = json.loads((out / "finetune" / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["processes"] == 2 and counts["gradient_accumulation_steps"] == 1
    assert counts["steps"] == 4 and counts["samples"] == 16  # 16 samples / global batch 4, whatever the world size
    # Rank 0 logs the samples it saw: one micro-batch of 2 per step, half of the data; the other half went to rank 1.
    # A lone process (or two processes each training alone) would log 2 micro-batches, all 16 samples.
    order = [json.loads(line) for line in (out / "finetune" / "data_order.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in order] == [0, 1, 2, 3] and all(len(entry["ids"]) == 2 for entry in order)
    seen = [i for entry in order for i in entry["ids"]]
    assert len(set(seen)) == 8

    start, final = state_dict(tiny_llava), state_dict(out / "finetune" / "final")
    assert start.keys() == final.keys() and all(torch.isfinite(v).all() for v in final.values())
    changed = {k.split(".")[1] for k in final if not torch.equal(final[k], start[k])}
    assert {"multi_modal_projector", "language_model"} <= changed and "vision_tower" not in changed
