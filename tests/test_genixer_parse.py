"""Genixer records: every task's builder target parses back to the same pairs; malformed outputs are counted under
their reason; instruction draws are seeded and the template pool is the size the method calls for."""

from __future__ import annotations

from collections import Counter

import pytest

from vlmforge.data.records import Rejections
from vlmforge.errors import DataError
from vlmforge.synth.genixer.build import build_generator_records, generator_record
from vlmforge.synth.genixer.parse import REASONS, ParseError, parse_output
from vlmforge.synth.genixer.tasks import TASKS
from vlmforge.synth.genixer.templates import GENERIC_INSTRUCTIONS, TASK_SENTENCES, draw_instruction

B1, B2 = "[0.100,0.200,0.300,0.400]", "[0.500,0.500,0.900,0.800]"

# One labeled record per task, as LLaVA/grounding data carries them.
LABELED = {
    "common_vqa": [("<image>\nWhat colour is the circle?", "red")],
    "adversarial_vqa": [("<image>\nIs there a blue star in the image?", "No")],
    "mc_vqa": [("<image>\nWhat shape is the red object?\nA. circle\nB. square\nC. star", "B")],
    "dialogue": [("<image>\nHow many objects are there?", "3"), ("Which one is largest?", "the red circle")],
    "rec": [("<image>\nWhere is the small red circle?", B1)],
    "reg": [(f"<image>\nWhat is in the region {B1}?", "a small red circle")],
    "pointqa": [(f"<image>\nWhich region holds the blue square? Candidates: {B1};{B2}", B2)],
    "qcba": [("<image>\nIs the circle left of the square?", f"The circle is at {B1} and the square at {B2}; Yes.")],
    "ref_dialogue": [(f"<image>\nWhat is at {B1}?", "a red circle"), ("Where is the blue square?", B2)],
}


def labeled(task: str, rid: str = "r1", **extra) -> dict:
    turns = []
    for q, a in LABELED[task]:
        turns += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    return {"id": rid, "image": "img.png", "conversations": turns, "task": task, **extra}


def test_the_template_pool_and_task_sentences():
    assert len(GENERIC_INSTRUCTIONS) == 58 and len(set(GENERIC_INSTRUCTIONS)) == 58
    assert set(TASK_SENTENCES) == set(TASKS) and len(TASKS) == 9
    a = [draw_instruction("rec", f"id{i}", seed=3) for i in range(50)]
    assert a == [draw_instruction("rec", f"id{i}", seed=3) for i in range(50)]  # seeded by record, not by order
    assert len({index for _, index, _ in a}) > 20
    assert all(text.endswith(TASK_SENTENCES["rec"]) and specific for text, _, specific in a)
    agnostic = draw_instruction("rec", "id0", mode="agnostic")
    assert agnostic[0] in GENERIC_INSTRUCTIONS and agnostic[2] is False
    mixed = [draw_instruction("rec", f"id{i}", mode="mixed", agnostic_share=0.5)[2] for i in range(200)]
    assert 60 < sum(mixed) < 140


@pytest.mark.parametrize("task", TASKS)
def test_builder_round_trips_through_the_parser(task):
    built = generator_record(labeled(task), "f.jsonl:1")
    human, gpt = built["conversations"]
    assert human["value"].startswith("<image>\n") and human["value"].endswith(TASK_SENTENCES[task])
    assert gpt["value"].startswith("Question: ") and built["task"] == task
    parsed = parse_output(gpt["value"], task)
    expected = [(q.replace("<image>\n", ""), a) for q, a in LABELED[task]]
    assert parsed.pairs == expected
    # Task-agnostic: the parser recognises the task from the output's shape alone.
    assert parse_output(gpt["value"]).task == task


def test_builder_without_task_field_infers_and_skips_other_tasks():
    rec = labeled("rec")
    del rec["task"]
    assert generator_record(rec, "f:1")["task"] == "rec"
    cap = {"id": "c", "image": "i.png", "task": "caption", "conversations": labeled("common_vqa")["conversations"]}
    records, other = build_generator_records([("f:1", labeled("reg")), ("f:2", cap)])
    assert len(records) == 1 and other == 1


def test_builder_normalises_pixel_boxes(tmp_path):
    from PIL import Image

    Image.new("RGB", (200, 100)).save(tmp_path / "img.png")
    rec = {"id": "p", "image": "img.png", "task": "rec"}
    rec["conversations"] = [
        {"from": "human", "value": "<image>\nthe cat"},
        {"from": "gpt", "value": "[20, 10, 100,50]"},
    ]
    built = generator_record(rec, "f:1", image_folder=tmp_path)
    assert built["conversations"][1]["value"] == "Question: the cat Answer: [0.100,0.100,0.500,0.500]"
    with pytest.raises(DataError, match="in pixels"):
        generator_record(rec, "f:1")  # no image folder: the size is unknown


def test_builder_errors_name_the_record_and_can_be_counted():
    bad = labeled("rec")
    bad["conversations"][1]["value"] = "somewhere on the left"
    with pytest.raises(DataError, match="f.jsonl:7.*no_box"):
        generator_record(bad, "f.jsonl:7")
    rejections = Rejections()
    records, _ = build_generator_records(
        [("f:1", bad), ("f:2", labeled("rec", "ok"))], on_error="skip", rejections=rejections
    )
    assert [r["id"] for r in records] == ["ok"] and rejections.counts == Counter(no_box=1)


MALFORMED = {
    "": ("common_vqa", "empty"),
    "The image shows a cat.": ("common_vqa", "no_question"),
    "Question: What is it?": ("common_vqa", "no_answer"),
    "Question: What is it? Answer:": ("common_vqa", "no_answer"),
    "Answer: red": ("common_vqa", "no_question"),
    "Question: Where is the cat? Answer: [0.1,0.2,0.3]": ("rec", "bad_box"),
    "Question: Where is the cat? Answer: [0.1,0.2,1.3,0.4]": ("rec", "box_out_of_range"),
    "Question: Where is the cat? Answer: [0.5,0.2,0.3,0.4]": ("rec", "degenerate_box"),
    "Question: Where is the cat? Answer: on the left": ("rec", "no_box"),
    "Question: What colour is it? Answer: B": ("mc_vqa", "options_missing"),
    "Question: What colour?\nA. red\nB. blue Answer: D": ("mc_vqa", "answer_not_an_option"),
    "Question: Is there a dog? Answer: maybe": ("adversarial_vqa", "not_yes_no"),
    "Question: What is at [0.1,0.1,0.2,0.2]? Answer: [0.1,0.1,0.2,0.2]": ("reg", "box_in_answer"),
    "Question: Which one, [0.1,0.1,0.2,0.2]? Answer: [0.1,0.1,0.2,0.2]": ("pointqa", "too_few_candidates"),
    "Question: Is it red? Answer: It is at [0.1,0.1,0.2,0.2], I think.": ("qcba", "not_yes_no"),
    "Question: How many? Answer: 3": ("dialogue", "too_few_turns"),
    "Question: Where is it? Answer: [0.1,0.1,0.2,0.2] Question: And the dog? Answer: [0.3,0.3,0.4,0.4]": (
        "rec",
        "too_many_turns",
    ),
    "Question: a? Answer: b Question: c? Answer: d": ("ref_dialogue", "no_box"),
    "Question: a? Answer: b Question: c?": ("dialogue", "no_answer"),
}


def test_malformed_outputs_are_counted_under_their_reason():
    counts = Counter()
    for text, (task, reason) in MALFORMED.items():
        with pytest.raises(ParseError) as err:
            parse_output(text, task)
        assert err.value.reason == reason, (text, err.value)
        counts[err.value.reason] += 1
    assert sum(counts.values()) == len(MALFORMED) and set(counts) <= set(REASONS)


def test_boxes_with_or_without_spaces_come_back_canonical():
    text = "Sure! Question: Which holds the dog? [0.1, 0.2, 0.3, 0.4] ; [ .5,.5,.9,.8 ] Answer:[0.5,0.5,0.9,0.8]"
    parsed = parse_output(text, "pointqa")
    assert parsed.pairs == [(f"Which holds the dog? {B1};{B2}", B2)]
    assert parsed.boxes == [[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.9, 0.8], [0.5, 0.5, 0.9, 0.8]]
    assert parse_output("question: is it [sic] red? answer: yes", "adversarial_vqa").pairs[0][1] == "yes"
    assert parse_output("**Question:** Is it red?\n**Answer:** No", "adversarial_vqa").pairs == [("Is it red?", "No")]
    mc = parse_output("Question: Which colour?\n(A) red\n(B) blue\nAnswer: (B)")
    assert mc.task == "mc_vqa" and mc.pairs[0][1] == "(B)"
