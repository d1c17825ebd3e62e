"""A vlmforge model under lmms-eval: `--model llava_hf` on an exported checkpoint and a local task written by
vlmforge, offline, giving the same greedy answers as `vlmforge eval` on the same questions."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import vlmforge
from eval_helpers import shapes_world
from vlmforge.cli import main
from vlmforge.eval import evaluate
from vlmforge.eval.generator import load_generator
from vlmforge.eval.lmms import read_lmms_answers, write_lmms_task
from vlmforge.eval.tasks import resolve
from vlmforge.testing.lmms import command, lmms_eval_available

TASKS = ["shapes_color", "shapes_exist", "shapes_count"]


def test_export_lmms_writes_the_questions_vlmforge_asks(tmp_path, capsys):
    data = {"world": str(shapes_world(tmp_path / "world"))}
    code = main(["eval", "--tasks", "shapes_color", "--data", f"world={data['world']}", "--limit", "1",
                 "--export-lmms", str(tmp_path / "tasks")])  # fmt: skip
    name = "vlmforge_shapes_color"
    assert code == 0 and f"--tasks {name} --include_path {tmp_path / 'tasks'}" in capsys.readouterr().out
    rows = [json.loads(line) for line in (tmp_path / "tasks" / f"{name}.jsonl").read_text().splitlines()]
    sample = resolve(["shapes_color"])[0].load(data)[0]
    assert rows == [{"id": sample.id, "prompt": sample.prompt, "images": sample.images, "targets": [sample.target]}]
    yaml_text = (tmp_path / "tasks" / f"{name}.yaml").read_text()
    assert f"task: {name}" in yaml_text and "max_new_tokens: 16" in yaml_text and "dataset_path: json" in yaml_text


@pytest.fixture(scope="module")
def talkative_llava(tiny_llava, tmp_path_factory):
    """The tiny LLaVA with larger random weights: its greedy answers differ by question instead of being blank."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    out = tmp_path_factory.mktemp("talkative") / "llava"
    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for weight in (p for p in model.parameters() if p.dim() > 1):
            weight.copy_(torch.randn(weight.shape, generator=generator) * 0.3)
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(tiny_llava).save_pretrained(out)
    return out


@pytest.mark.slow
@pytest.mark.skipif(not lmms_eval_available(), reason="lmms-eval is not installed (pip install lmms-eval)")
def test_lmms_eval_llava_hf_answers_as_vlmforge_does(tmp_path, talkative_llava):
    data = {"world": str(shapes_world(tmp_path / "world"))}
    names = [write_lmms_task(task, data, tmp_path / "tasks") for task in resolve(TASKS)]
    args = ["--model", "llava_hf", "--model_args", f"pretrained={talkative_llava},device=cpu,dtype=float32,device_map=cpu",
            "--tasks", ",".join(names), "--include_path", str(tmp_path / "tasks"), "--batch_size", "1",
            "--output_path", str(tmp_path / "lmms"), "--log_samples"]  # fmt: skip
    source = str(Path(vlmforge.__file__).parents[1])  # the vlmforge under test, wherever the process starts
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    run = subprocess.run(command(args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]

    evaluate(load_generator(talkative_llava, batch_size=1), TASKS, tmp_path / "ours", data=data, progress=False)
    answers = []
    for task, name in zip(TASKS, names, strict=True):
        ours = [json.loads(line)["prediction"] for line in (tmp_path / "ours" / f"samples_{task}.jsonl").open()]
        theirs = read_lmms_answers(tmp_path / "lmms", name)
        assert len(ours) == 2 and [a.strip() for a in theirs] == ours, task
        answers += ours
    assert all(answers) and len(set(answers)) == len(answers)  # a real comparison, not of blank answers
