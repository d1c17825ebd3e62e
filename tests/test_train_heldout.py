"""Held-out evaluation during training: the metric itself, and the Trainer plumbing around it."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, EvalPrediction

from train_helpers import finetune_only_recipe, tiny_data, write_yaml  # noqa: F401  (fixture)
from vlmforge.data.collate import PaddingCollator
from vlmforge.data.dataset import ConversationDataset
from vlmforge.errors import ConfigError
from vlmforge.train.heldout import answer_accuracy
from vlmforge.train.recipe import load_recipe, recipe_from_dict
from vlmforge.train.stage import run_recipe

X = -100


def test_answer_accuracy_scores_shifted_label_tokens_only():
    # Position t predicts label t + 1. Sample 0: both answer tokens right. Sample 1: one of two right.
    # Sample 2: padding only (a sample with no answer is not scored). Predictions under -100 labels are ignored.
    labels = np.array([[X, X, 5, 6], [X, 7, 8, X], [X, X, X, X]])
    predicted = np.array([[9, 5, 6, 1], [7, 3, 1, 1], [2, 2, 2, 2]])
    scores = answer_accuracy(EvalPrediction(predictions=predicted, label_ids=labels))
    assert scores["label_token_accuracy"] == pytest.approx(3 / 4)
    assert scores["answer_exact_match"] == pytest.approx(1 / 2)
    # The same predictions unshifted would score differently: the shift is part of the contract.
    unshifted = answer_accuracy(EvalPrediction(predictions=np.roll(predicted, 1, axis=1), label_ids=labels))
    assert unshifted["label_token_accuracy"] != scores["label_token_accuracy"]


def test_eval_steps_must_be_positive_when_evaluating(tmp_path, tiny_data):  # noqa: F811
    recipe = finetune_only_recipe(tmp_path, tiny_data, (tmp_path, tmp_path))
    recipe["stages"]["finetune"].update(eval_data={"path": str(tiny_data / "qa.jsonl")}, eval_steps=0)
    with pytest.raises(ConfigError, match="eval_steps must be at least 1"):
        recipe_from_dict(recipe)


def _teacher_forced_accuracy(model_dir, data):
    """The final model's accuracy on the held-out records, computed here without the Trainer."""
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    dataset = ConversationDataset(str(data / "qa.jsonl"), AutoProcessor.from_pretrained(model_dir))
    batch = PaddingCollator(pad_token_id=0)([dataset[i] for i in range(len(dataset))])
    labels = batch.pop("labels")
    with torch.no_grad():
        predicted = model(**batch).logits.argmax(-1)
    targets, scored = labels[:, 1:], labels[:, 1:] != X
    return float(((predicted[:, :-1] == targets) & scored).sum() / scored.sum())


@pytest.mark.parametrize("tune", ["full", "lora"])  # LoRA: the Trainer sees a PEFT wrapper, not the VLM
def test_finetune_stage_reports_heldout_accuracy_as_it_trains(tmp_path, tiny_data, tiny_parts, tune):  # noqa: F811
    out = tmp_path / "run"
    recipe = finetune_only_recipe(
        out, tiny_data, tiny_parts, eval_data={"path": str(tiny_data / "qa.jsonl")}, eval_steps=2, tune=tune
    )
    run_recipe(load_recipe(write_yaml(tmp_path / "r.yaml", recipe)))
    stage = out / "finetune"
    events = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in events if "eval_loss" in e]
    # Every 2 of the 4 steps, then once more at the end of the stage.
    assert [e["step"] for e in evals] == [2, 4, 4]
    assert all(0 <= e["eval_label_token_accuracy"] <= 1 and 0 <= e["eval_answer_exact_match"] <= 1 for e in evals)
    # Evaluation batches are not training data: the order log holds 4 steps x 2 micro-batches only.
    assert len((stage / "data_order.jsonl").read_text().splitlines()) == 8
    manifest = json.loads((stage / "manifest.json").read_text())
    assert manifest["counts"]["eval_records"] == 16 and manifest["counts"]["eval_rejected"] == 0
    reported = manifest["metrics"]["eval_label_token_accuracy"]
    assert reported == pytest.approx(_teacher_forced_accuracy(stage / "final", tiny_data), abs=1e-6)
