"""`vlmforge unified conflict`: the same batches and label masks for every model and both sides, the same
layer indices, results reused on a rerun, and clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from unified_helpers import save_unified_folder, scene, tiny_patch_tokenizer
from vlmforge.cli import main
from vlmforge.data.chat import IGNORE_INDEX
from vlmforge.models.unified.chat_processor import IMAGE_TOKENIZER_DIR, load_for_chat
from vlmforge.train import conflict_run
from vlmforge.train.conflict import gradient_conflict
from vlmforge.train.conflict_data import conflict_batches, first_turns, pick

QA = [("What colour is the circle?", "red"), ("How many objects are there?", "3"), ("Where is the star?", "top left"),
      ("Is there a square?", "No"), ("What shape is blue?", "circle"), ("How many red objects?", "2")]  # fmt: skip


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("conflict_command")
    models = {arm: save_unified_folder(root / arm, arm=arm) for arm in ("shared", "two_end")}
    lines = []
    for i, (question, answer) in enumerate(QA):
        scene(i).save(root / f"{i}.png")
        turns = [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]
        lines.append(json.dumps({"id": f"r{i}", "image": f"{i}.png", "conversations": turns}))
    (root / "records.jsonl").write_text("\n".join(lines) + "\n")
    return root, models


def run(root, models, out, *extra: str) -> int:
    named = [arg for name, path in models.items() for arg in ("--model", f"{name}={path}")]
    return main(["unified", "conflict", *named, "--records", str(root / "records.jsonl"), "--batches", "2",
                 "--batch-size", "2", "--out", str(out), *extra])  # fmt: skip


def test_both_sides_train_the_same_answer_tokens(lab):
    root, models = lab
    _, processor = load_for_chat(models["two_end"])
    turns = pick(first_turns(root / "records.jsonl"), 4, 0, "records")
    text = conflict_batches(turns, processor, 2, with_images=False)
    multimodal = conflict_batches(turns, processor, 2, with_images=True)
    vision_start = processor.config.vision_start_token_id
    for t, m in zip(text, multimodal, strict=True):
        assert (t["input_ids"] == vision_start).sum() == 0 and (m["input_ids"] == vision_start).sum(dim=1).eq(1).all()
        for t_labels, m_labels in zip(t["labels"], m["labels"], strict=True):
            trained = t_labels[t_labels != IGNORE_INDEX].tolist()
            assert trained and trained == m_labels[m_labels != IGNORE_INDEX].tolist()


def test_conflict_compares_the_shared_layers_of_both_models(lab, tmp_path, monkeypatch, capsys):
    root, models = lab
    out = tmp_path / "out"
    assert run(root, models, out) == 0
    report = json.loads((out / "conflict.json").read_text())
    assert report["layers"] == [1]  # two_end (E=1, D=1 of 3 layers) shares only layer 1; shared shares all
    assert set(report["results"]) == {"shared", "two_end"} and (out / "conflict.png").stat().st_size > 0
    assert "[conflict] two_end: mean" in capsys.readouterr().out
    # The command's number is the measure on the batches conflict_data builds.
    model, processor = load_for_chat(models["two_end"])
    turns = pick(first_turns(root / "records.jsonl"), 4, 0, "records")
    direct = gradient_conflict(model, conflict_batches(turns, processor, 2, False),
                               conflict_batches(turns, processor, 2, True), [1], 0)  # fmt: skip
    assert torch.allclose(
        torch.tensor(report["results"]["two_end"]["conflict"]["q"]), torch.tensor(direct["conflict"]["q"])
    )
    assert report["results"]["shared"]["conflict"]["q"] != report["results"]["two_end"]["conflict"]["q"]

    def refuse(*_args, **_kwargs):
        raise AssertionError("a finished model was measured again")

    monkeypatch.setattr(conflict_run, "_measure", refuse)
    assert run(root, models, out) == 0  # both results reused
    with pytest.raises(AssertionError, match="measured again"):
        run(root, models, out, "--seed", "1")  # other batches: measured again


def test_bad_input_is_named(lab, tmp_path, capsys):
    root, models = lab
    assert run(root, models, tmp_path / "o", "--layers", "0") == 1
    assert "layer(s) [0] are not shared in model 'two_end'" in capsys.readouterr().err
    assert run(root, models, tmp_path / "o", "--batches", "4") == 1
    assert "8 samples needed (batches x batch size), only 6 records" in capsys.readouterr().err
    other = tmp_path / "other"
    shutil.copytree(models["two_end"], other)
    shutil.rmtree(other / IMAGE_TOKENIZER_DIR)
    tiny_patch_tokenizer(seed=1).save(other / IMAGE_TOKENIZER_DIR)
    assert run(root, {"two_end": models["two_end"], "other": other}, tmp_path / "o2") == 1
    assert "encode the records differently" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "conversations": [{"from": "human", "value": "hi"}]}) + "\n")
    assert main(["unified", "conflict", "--model", f"a={models['shared']}", "--records", str(bad), "--out",
                 str(tmp_path / "o3")]) == 1  # fmt: skip
    assert f"{bad}:1: the conflict analysis needs a first human turn" in capsys.readouterr().err
