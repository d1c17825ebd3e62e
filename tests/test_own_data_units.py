"""The pieces of the own-data command that need no model: step sizing, the held-out split, question kinds and the
probe's applicability and accuracy on features where the answer is (or is not) linearly readable."""

import pytest
import torch

from vlmforge.data.kinds import QUESTION_FIELD, kind_field, kind_of
from vlmforge.data.split import image_key, split_by_image
from vlmforge.eval.probe import readout_ceiling, report_lines, why_not_applicable, with_vlm
from vlmforge.train.schedule import StepSchedule, epoch_steps, short_stage_warning, size_stage


def test_stages_are_sized_in_steps_from_the_data_with_a_minimum_and_a_cap():
    assert epoch_steps(2000, 32, 0.4) == 25  # the 0.4 epochs on 2000 records
    assert epoch_steps(0, 32, 3) == 0
    assert size_stage(2000, 32, StepSchedule(epochs=0.4, min_steps=300)) == 300
    assert size_stage(24000, 32, StepSchedule(epochs=0.4, min_steps=300)) == 300
    assert size_stage(24000, 32, StepSchedule(epochs=2, min_steps=300)) == 1500
    assert size_stage(24000, 32, StepSchedule(epochs=2, min_steps=300, max_steps=1000)) == 1000


def test_a_short_stage_gets_a_warning_naming_records_batch_and_steps():
    warning = short_stage_warning("finetune", 2000, 32, 25)
    assert "25 optimizer steps" in warning and "2000 records" in warning and "global batch 32" in warning
    assert "stages.finetune.max_steps" in warning
    assert short_stage_warning("finetune", 24000, 32, 300) == ""


def _record(i, image, kind="colour", question="What colour is it?", answer="red"):
    return {"id": str(i), "image": image, "kind": kind,
            "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]}  # fmt: skip


def test_the_heldout_split_is_seeded_and_never_splits_an_image():
    records = [_record(i, f"{i // 3}.png") for i in range(60)]  # 20 images, 3 records each
    records.append({"id": "text", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]})
    split = split_by_image(records, 0.25, seed=4)
    again = split_by_image(records, 0.25, seed=4)
    other = split_by_image(records, 0.25, seed=5)
    assert split.heldout == again.heldout and split.heldout != other.heldout
    assert len(split.heldout_images) == 5 and len(split.heldout) == 15
    assert not {image_key(r) for r in split.train} & {image_key(r) for r in split.heldout}
    assert split.train[-1]["id"] == "text"  # text-only records always train
    assert split_by_image(records, 0.25, seed=4, max_images=2).summary(4, 0.25)["heldout_images"] == 2
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_by_image(records, 1.5, seed=0)


def test_kinds_come_from_a_field_or_else_the_question():
    records = [_record(0, "a.png"), _record(1, "b.png", kind="shape", question="Which shape?")]
    assert kind_field(records) == "kind"
    assert kind_field(records, "task") == "task"
    plain = [{k: v for k, v in r.items() if k != "kind"} for r in records]
    assert kind_field(plain) == QUESTION_FIELD
    assert [kind_of(r, QUESTION_FIELD) for r in plain] == ["What colour is it?", "Which shape?"]


def test_the_probe_says_where_it_does_not_apply():
    one_question = [(f"{i}.png", "colour", "What colour?", ["red", "blue"][i % 2]) for i in range(10)]
    assert why_not_applicable(one_question) == ""
    several = one_question + [(f"{i}.png", "colour", "Colour of the sky?", "grey") for i in range(10)]
    assert "10 of 10 images have different answers to different questions" in why_not_applicable(several)
    assert "every training answer is 'red'" in why_not_applicable([("a.png", "k", "q", "red")] * 5)
    free = [(f"{i}.png", "caption", "Describe it.", f"caption number {i}") for i in range(40)]
    assert "free text" in why_not_applicable(free)


def test_the_probe_reads_a_separable_kind_and_not_a_random_one():
    torch.manual_seed(0)
    colours = ["red", "green", "blue"]
    images = [f"{i}.png" for i in range(90)]
    centres = torch.randn(3, 16) * 3
    features = {image: centres[i % 3] + 0.3 * torch.randn(16) for i, image in enumerate(images)}
    coin = torch.randint(0, 2, (90,)).tolist()
    rows = [(image, "colour", "What colour?", colours[i % 3]) for i, image in enumerate(images)]
    rows += [(image, "coin", "Heads or tails?", ["heads", "tails"][coin[i]]) for i, image in enumerate(images)]
    train = [r for r in rows if int(r[0].split(".")[0]) < 60]
    held = [r for r in rows if int(r[0].split(".")[0]) >= 60]
    ceiling = readout_ceiling(train, held, features)
    assert ceiling["colour"]["probe_accuracy"] == 1.0 and ceiling["colour"]["classes"] == 3
    assert ceiling["coin"]["probe_accuracy"] < 0.75  # a coin flip is not in the picture
    results = {"tasks": {"jsonl": {"primary": "accuracy", "metrics": {"kind=colour/accuracy": {"value": 0.95}}}}}
    joined = with_vlm(ceiling, results, "kind")
    assert joined["colour"]["ratio"] == pytest.approx(0.95) and "ratio" not in joined["coin"]
    assert any(line.startswith("| colour | 0.950 | 1.000 | 0.95 |") for line in report_lines(joined, "kind"))


def test_prepare_groups_by_question_without_a_kind_field_and_takes_captions_from_train_images(tmp_path):
    import json

    from own_data_helpers import colour_records
    from vlmforge.owndata.prepare import prepare
    from vlmforge.owndata.settings import OwnDataSettings

    data = colour_records(tmp_path / "d", images=8, captions=True)
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    data.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "kind"}) + "\n" for r in rows))
    prepared = prepare(data, data.parent, None, OwnDataSettings(heldout_fraction=0.25), "raise", tmp_path / "out")
    assert prepared.field == QUESTION_FIELD and prepared.stage1_source == "captions"
    held = [json.loads(line) for line in (tmp_path / "out" / "heldout.jsonl").read_text().splitlines()]
    assert {r["question"] for r in held} == {"What colour is it?", "Heads or tails?"}
    train_images = {r["image"] for r in prepared.train}
    assert len(prepared.captions) == 6 and {c["image"] for c in prepared.captions} == train_images
    given = prepare(data, data.parent, data, OwnDataSettings(), "raise", tmp_path / "given")
    assert given.split["by"] == "file" and len(given.heldout) == len(rows)


def test_the_shipped_template_sizes_the_finetune_in_steps_rewords_its_questions_and_decays():
    from vlmforge.owndata.settings import load_template, template_text

    variables = {name: f"/x/{name}" for name in ("vision", "lm", "images", "train", "stage1")}
    settings, recipe, _ = load_template(template_text(), variables)
    finetune = recipe["stages"]["finetune"]
    assert finetune["data"]["reword_questions"] is True and finetune["data"]["path"] == "/x/train"
    assert finetune["weight_decay"] > 0  # docs/own-data.md: the hard kinds need it
    plan = settings.schedule["finetune"]
    # A few dozen records still get the minimum; a few thousand get many passes; a large set stops at the cap.
    assert size_stage(50, 32, plan) == plan.min_steps
    assert plan.min_steps < size_stage(1800, 32, plan) < plan.max_steps
    assert size_stage(100_000, 32, plan) == plan.max_steps
