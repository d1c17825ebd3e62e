"""Templated question rewording (a stage's ``data.reword_questions``)."""

from __future__ import annotations

import random

import pytest
from transformers import AutoProcessor

from test_train import tiny_data  # noqa: F401  (fixture)
from vlmforge.data.reword import reword_question, reword_record
from vlmforge.errors import ConfigError
from vlmforge.train.data import build_training_data
from vlmforge.train.recipe import recipe_from_dict


def _record(i: int, question: str = "What colour is the digit?") -> dict:
    return {
        "id": f"r{i}",
        "image": f"{i}.png",
        "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": "red"}],
    }


def test_a_share_of_records_is_reworded_the_same_way_for_the_same_seed():
    records = [_record(i) for i in range(200)]
    first = [reword_record(r, seed=0) for r in records]
    assert first == [reword_record(r, seed=0) for r in records]
    assert first != [reword_record(r, seed=1) for r in records]
    changed = [new for new, old in zip(first, records, strict=True) if new != old]
    assert 60 < len(changed) < 140  # about half, the default share
    phrasings = {r["conversations"][0]["value"] for r in changed}
    assert len(phrasings) >= 10
    for record in changed:
        question, answer = record["conversations"]
        assert question["value"].startswith("<image>\n") and question["value"].count("<image>") == 1
        assert answer == {"from": "gpt", "value": "red"}
    assert all(reword_record(r, seed=0, share=0.0) == r for r in records)


def test_rewordings_restructure_questions_of_any_dataset():
    rng = random.Random(0)
    seen = {q: {reword_question(q, rng) for _ in range(60)} for q in ("What is the large object?", "How many dots?")}
    assert "Tell me what the large object is." in seen["What is the large object?"]
    assert "Tell me how many dots." in seen["How many dots?"]
    assert any(text.startswith("Look at the image. ") for texts in seen.values() for text in texts)


def test_the_option_is_off_by_default_and_refused_on_a_pretrain_stage():
    stages = {"finetune": {"data": {"path": "qa.jsonl"}}}
    model = {"language_model": "lm"}
    assert recipe_from_dict({"model": model, "stages": stages}).stages["finetune"].data.reword_questions is False
    with pytest.raises(ConfigError, match="stages.pretrain.data.reword_questions"):
        recipe_from_dict(
            {"model": model, "stages": {"pretrain": {"data": {"path": "c.jsonl", "reword_questions": True}}}}
        )


def test_a_stage_with_the_option_trains_on_reworded_questions(tiny_data, tiny_llava):  # noqa: F811
    processor = AutoProcessor.from_pretrained(tiny_llava)
    path = str(tiny_data / "qa.jsonl")
    recipe = recipe_from_dict(
        {"model": {"language_model": "lm"}, "stages": {"finetune": {"data": {"path": path, "reword_questions": True}}}}
    )
    stage = recipe.stages["finetune"]
    reworded = build_training_data(stage, processor, None, seed=0).dataset.base
    stage.data.reword_questions = False
    plain = build_training_data(stage, processor, None, seed=0).dataset.base
    questions = [[r["conversations"][0]["value"] for _, r in d.items] for d in (plain, reworded)]
    assert set(questions[0]) == {"<image>\nWhat colour is it?"}
    assert len(set(questions[1])) > 1 and "<image>\nWhat colour is it?" in questions[1]
    assert [r["conversations"][1] for _, r in plain.items] == [r["conversations"][1] for _, r in reworded.items]
    assert len(reworded[0]["input_ids"]) > 0
