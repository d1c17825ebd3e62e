"""Bad input to `vlmforge train`: one clear line on stderr and exit code 1 — or, with `on_error: skip`, a finished
run whose manifest counts what was skipped and why."""

from __future__ import annotations

import json
import shutil

import pytest

from train_helpers import finetune_only_recipe, tiny_data, write_yaml  # noqa: F401
from vlmforge.cli import main

LONG_ANSWER = " ".join(["two blue squares and a green triangle"] * 40)  # far over max_length below


def _train(capsys, recipe_path, *extra):
    code = main(["train", str(recipe_path), *extra])
    err = capsys.readouterr().err.strip()
    return code, err


def _assert_one_line_error(code, err, *needles):
    """Exit code 1; the error is one line, the last on stderr (progress bars from loading may precede it)."""
    assert code == 1
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("vlmforge train: error: "), err[-2000:]
    assert err.splitlines()[-1] == errors[0]
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"


@pytest.fixture()
def bad_data(tmp_path, tiny_data):  # noqa: F811
    """A copy of the colour questions; tests append or alter lines."""
    folder = tmp_path / "data"
    shutil.copytree(tiny_data, folder)
    return folder


def _lines(folder):
    return (folder / "qa.jsonl").read_text().splitlines()


def _write(folder, lines):
    (folder / "qa.jsonl").write_text("".join(line + "\n" for line in lines))


def _record(i, answer="red", image="0.png"):
    return json.dumps(
        {
            "id": f"x{i}",
            "image": image,
            "conversations": [
                {"from": "human", "value": "<image>\nWhat colour is it?"},
                {"from": "gpt", "value": answer},
            ],
        }
    )


def test_unknown_recipe_key_lists_valid_keys(tmp_path, tiny_data, tiny_llava, capsys):  # noqa: F811
    recipe = finetune_only_recipe(tmp_path / "out", tiny_data, init_from=tiny_llava)
    recipe["stages"]["finetune"]["lerning_rate"] = 1e-4
    code, err = _train(capsys, write_yaml(tmp_path / "r.yaml", recipe))
    _assert_one_line_error(
        code, err, "stages.finetune.lerning_rate", "valid keys", "learning_rate", "global_batch_size"
    )
    recipe["stages"]["finetune"].pop("lerning_rate")
    code, err = _train(capsys, write_yaml(tmp_path / "r.yaml", recipe), "--set", "model.vison_model=x")
    _assert_one_line_error(code, err, "model.vison_model", "vision_model", "language_model")
    assert not (tmp_path / "out").exists()  # rejected before anything ran


@pytest.mark.parametrize("which", ["local", "hub"])
def test_missing_model_gives_a_clear_message(tmp_path, tiny_data, tiny_parts, capsys, which):  # noqa: F811
    vision, lm = tiny_parts
    missing = str(tmp_path / "no-such-lm") if which == "local" else "no-such-org/no-such-model"
    recipe = finetune_only_recipe(tmp_path / "out", tiny_data, (vision, missing))
    code, err = _train(capsys, write_yaml(tmp_path / "r.yaml", recipe))
    _assert_one_line_error(code, err, missing)


def test_malformed_json_line_is_named(tmp_path, bad_data, tiny_llava, capsys):
    lines = _lines(bad_data)
    lines.insert(2, '{"id": "broken", "image": "1.png", "conversations": [')
    _write(bad_data, lines)
    recipe = finetune_only_recipe(tmp_path / "out", bad_data, init_from=tiny_llava)
    code, err = _train(capsys, write_yaml(tmp_path / "r.yaml", recipe))
    _assert_one_line_error(code, err, f"{bad_data / 'qa.jsonl'}:3", "malformed JSON")


def test_missing_image_is_named(tmp_path, bad_data, tiny_llava, capsys):
    _write(bad_data, [*_lines(bad_data), _record(99, image="gone.png")])
    recipe = finetune_only_recipe(tmp_path / "out", bad_data, init_from=tiny_llava)
    code, err = _train(capsys, write_yaml(tmp_path / "r.yaml", recipe))
    _assert_one_line_error(code, err, f"{bad_data / 'qa.jsonl'}:17", "gone.png", "does not exist")


def test_sample_over_max_length_is_named(tmp_path, bad_data, tiny_llava, capsys):
    _write(bad_data, [*_lines(bad_data)[:5], _record(5, answer=LONG_ANSWER)])
    recipe = finetune_only_recipe(tmp_path / "out", bad_data, init_from=tiny_llava, max_length=64)
    code, err = _train(capsys, write_yaml(tmp_path / "r.yaml", recipe))
    _assert_one_line_error(code, err, f"{bad_data / 'qa.jsonl'}:6", "max_length=64")


def test_on_error_skip_trains_and_counts_rejections(tmp_path, bad_data, tiny_llava, capsys):
    lines = _lines(bad_data)  # 16 good records; add one of each kind of bad record
    lines += ["{not json", _record(97, image="gone.png"), _record(98, answer=LONG_ANSWER)]
    _write(bad_data, lines)
    recipe = finetune_only_recipe(
        tmp_path / "out", bad_data, init_from=tiny_llava, max_length=64, epochs=2, top={"on_error": "skip"}
    )
    code, err = _train(capsys, write_yaml(tmp_path / "r.yaml", recipe))
    assert code == 0, err[-2000:]
    manifest = json.loads((tmp_path / "out" / "finetune" / "manifest.json").read_text())
    assert manifest["rejections"]["by_reason"] == {"malformed_json": 1, "missing_image": 1, "too_long": 1}
    assert manifest["rejections"]["total"] == 3
    assert manifest["rejections"]["examples"]["too_long"] == [f"{bad_data / 'qa.jsonl'}:19"]
    assert manifest["counts"]["samples"] == 16 and manifest["counts"]["steps"] == 8
    assert (tmp_path / "out" / "finetune" / "final" / "config.json").exists()
