"""Finished work is reused only for the inputs it was made from: `vlmforge train` stages and `vlmforge eval`
folders record their inputs, a rerun with other inputs stops and names the difference, --force redoes the work."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from eval_helpers import Oracle, shapes_world
from train_helpers import finetune_only_recipe, tiny_data, write_yaml  # noqa: F401  (fixture)
from vlmforge.cli import main
from vlmforge.errors import StaleOutputError
from vlmforge.eval import evaluate
from vlmforge.provenance import INPUTS_JSON, differences, path_identity
from vlmforge.train.recipe import recipe_from_dict
from vlmforge.train.stage import run_recipe

# --- the shared record ---


def test_a_path_is_identified_by_its_contents_when_small_and_by_sizes_and_times_otherwise(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.safetensors").write_bytes(b"weights")
    hashed, listed = path_identity(model), path_identity(model, hash_limit=0)
    assert "sha256" in hashed and "sha256" not in listed
    os.utime(model / "w.safetensors", ns=(1, 1))  # touched: same contents
    assert differences(hashed, path_identity(model)) == []
    assert differences(listed, path_identity(model, hash_limit=0)) == [
        f": the files in {model} changed (sizes or modification times)"
    ]
    (model / "w.safetensors").write_bytes(b"other weights")
    assert differences({"m": hashed}, {"m": path_identity(model)}) == [f"m: the contents of {model} changed"]
    assert path_identity("org/hub-model") == {"kind": "name", "name": "org/hub-model"}
    assert differences({"a": 1, "b": [1, 2]}, {"a": 2, "b": [1, 2], "c": "x"}) == [
        "a: 1 -> 2",
        'c: (not recorded) -> "x"',
    ]


def test_a_stage_output_is_named_after_its_run(tmp_path):
    from vlmforge.runtime import run_name

    run = tmp_path / "bunny-seed0"
    (run / "finetune" / "final").mkdir(parents=True)
    (run / "pretrain" / "checkpoint-7").mkdir(parents=True)
    assert run_name(run / "finetune" / "final") == "finetune"  # no recipe, no manifest: not known as a stage
    (run / "finetune" / "manifest.json").write_text("{}")
    assert run_name(run / "finetune" / "final") == "bunny-seed0"
    (run / "recipe.yaml").write_text("stages: {pretrain: {}, finetune: {}}\n")
    assert run_name(f"{run}/finetune/final/") == "bunny-seed0"
    assert run_name(run / "pretrain" / "checkpoint-7") == "bunny-seed0-pretrain-checkpoint-7"
    assert run_name(tmp_path / "my-model") == "my-model"


# --- vlmforge train ---


@pytest.fixture
def recipe_for(tmp_path, tiny_data, tiny_parts):  # noqa: F811
    def make(**finetune):
        return recipe_from_dict(
            finetune_only_recipe(tmp_path / "run", tiny_data, tiny_parts, save_steps=100, **finetune)
        )

    return make


def _trained_at(out):
    return json.loads((out / "finetune" / "manifest.json").read_text())["created"], (
        out / "finetune" / "final" / "model.safetensors"
    ).stat().st_mtime_ns


def test_train_reuses_a_stage_only_for_the_same_recipe_and_inputs(tmp_path, recipe_for, tiny_data, capsys):  # noqa: F811
    out = tmp_path / "run"
    run_recipe(recipe_for())
    first = _trained_at(out)
    assert json.loads((out / "finetune" / INPUTS_JSON).read_text())["stages.finetune"]["learning_rate"] == 1e-3
    run_recipe(recipe_for())
    assert _trained_at(out) == first and "[finetune] reused" in capsys.readouterr().out

    with pytest.raises(
        StaleOutputError, match=r"stage 'finetune'.*stages\.finetune\.learning_rate: 0\.001 -> 0\.002.*--force"
    ):
        run_recipe(recipe_for(learning_rate=2e-3))
    assert _trained_at(out) == first  # nothing was touched

    # the same settings over other data: the data file's contents are part of the stage's inputs
    data = tiny_data / "qa.jsonl"
    saved = data.read_text()
    try:
        data.write_text(saved.replace('"red"', '"crimson"'))
        with pytest.raises(StaleOutputError, match=r"inputs\.data: the contents of .*qa\.jsonl changed"):
            run_recipe(recipe_for())
    finally:
        data.write_text(saved)

    run_recipe(recipe_for(learning_rate=2e-3), force=True)
    assert _trained_at(out) != first
    assert json.loads((out / "finetune" / INPUTS_JSON).read_text())["stages.finetune"]["learning_rate"] == 2e-3


def test_train_stops_when_the_starting_model_changed(tmp_path, tiny_data, tiny_parts):  # noqa: F811
    vision, lm = tiny_parts
    other_lm = shutil.copytree(lm, tmp_path / "other-lm")
    out = tmp_path / "run"
    run_recipe(recipe_from_dict(finetune_only_recipe(out, tiny_data, (vision, lm), save_steps=100)))
    with pytest.raises(StaleOutputError) as err:
        run_recipe(recipe_from_dict(finetune_only_recipe(out, tiny_data, (vision, other_lm), save_steps=100)))
    assert f'model.language_model: "{lm}" -> "{other_lm}"' in str(err.value)


def test_train_cli_names_the_difference_and_force_trains_again(tmp_path, tiny_data, tiny_parts, capfd):  # noqa: F811
    recipe = write_yaml(tmp_path / "r.yaml", finetune_only_recipe(tmp_path / "unused", tiny_data, tiny_parts))
    out = tmp_path / "cli-run"
    assert main(["train", str(recipe), "--out", str(out)]) == 0
    assert (out / "finetune" / "final" / "config.json").exists() and not (tmp_path / "unused").exists()
    printed = "".join(capfd.readouterr())
    # one bar and one summary line per stage; no raw Trainer dicts or load reports without --verbose
    assert "[finetune] 4 steps in" in printed and f"-> {out / 'finetune' / 'final'}" in printed
    assert "{'loss'" not in printed and "Loading weights" not in printed and "LOAD REPORT" not in printed
    changed = ["train", str(recipe), "--out", str(out), "--set", "stages.finetune.epochs=2"]
    assert main(changed) == 1
    err = capfd.readouterr().err
    assert "stages.finetune.epochs: 1.0 -> 2.0" in err and "--force" in err and "--out" in err
    assert main([*changed, "--force", "--verbose"]) == 0
    assert json.loads((out / "finetune" / "manifest.json").read_text())["counts"]["steps"] == 8
    assert "{'loss'" in "".join(capfd.readouterr())  # the Trainer's own output, asked for


# --- vlmforge eval ---


@pytest.fixture
def world(tmp_path):
    return {"world": str(shapes_world(tmp_path / "world"))}


def _fake_model(path, weights: bytes):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(weights)
    return path


def test_eval_resumes_only_for_the_same_model_and_task_settings(tmp_path, world):
    model, out = _fake_model(tmp_path / "model", b"one"), tmp_path / "out"

    def run(tasks=("shapes_color",), **kw):
        oracle = Oracle(list(tasks), world)
        evaluate(oracle, list(tasks), out, data=world, model={"name": "m", "path": str(model)}, progress=False, **kw)
        return oracle.calls

    assert run() == 2
    assert run() == 0  # reused
    assert run(["shapes_color", "shapes_exist"]) == 2  # a task added to the folder; the finished one reused
    with pytest.raises(StaleOutputError, match=r"tasks\.shapes_color\.max_new_tokens: 16 -> 3"):
        run(max_new_tokens=3)
    _fake_model(model, b"two")  # retrained in place: other weights under the same path
    with pytest.raises(StaleOutputError, match=rf"model: the contents of {model} changed.*--force.*--out"):
        run()
    assert run(force=True) == 2
    assert set(json.loads((out / "results.json").read_text())["tasks"]) == {"shapes_color"}  # old tasks gone
    assert run() == 0


def test_eval_stops_when_the_questions_changed(tmp_path, world):
    out, model = tmp_path / "out", {"name": "m", "path": str(_fake_model(tmp_path / "model", b"w"))}
    evaluate(Oracle(["shapes_color"], world), ["shapes_color"], out, data=world, model=model, progress=False)
    records = tmp_path / "world" / "test" / "instruct.jsonl"
    records.write_text(records.read_text().replace("What color is the circle?", "Which colour has the circle?"))
    with pytest.raises(StaleOutputError, match=r"tasks\.shapes_color\.questions"):
        evaluate(Oracle(["shapes_color"], world), ["shapes_color"], out, data=world, model=model, progress=False)


def test_eval_cli_refuses_another_model_and_force_starts_over(tmp_path, tiny_llava, capfd):
    world = shapes_world(tmp_path / "world")
    other = shutil.copytree(tiny_llava, tmp_path / "runs" / "other" / "finetune" / "final")
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "note": "another model"}))  # other contents
    (tmp_path / "runs" / "other" / "recipe.yaml").write_text("stages: {pretrain: {}, finetune: {}}\n")
    out = tmp_path / "eval"
    args = ["eval", "--tasks", "shapes_color", "--data", f"world={world}", "--out", str(out), "--max-new-tokens", "2"]
    assert main([*args, "--model", str(tiny_llava)]) == 0
    printed = "".join(capfd.readouterr())
    assert "[eval] 1 task(s), 2 questions, 0 reused" in printed and "Loading weights" not in printed
    assert main([*args, "--model", str(other)]) == 1
    err = capfd.readouterr().err
    assert f"model: the contents of {other} changed" in err and "--force" in err
    assert main([*args, "--model", str(other), "--force"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == {"name": "other", "path": str(other)}  # named after its run, not "final"
