"""Multiple-choice samples with fresh options for the reader (vlmforge.shapes.foundation.options)."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import replace

import pytest

from test_foundation import TINY_LM, TINY_VISION, write_world
from vlmforge.errors import ConfigError, DataError
from vlmforge.models.assemble import IMAGE_TOKEN
from vlmforge.models.tokenizer import train_tokenizer
from vlmforge.shapes.foundation.corpus import lm_texts, read_world, scene_lookup, tokenizer_texts
from vlmforge.shapes.foundation.lm import pretrain_lm
from vlmforge.shapes.foundation.options import OptionSampler, option_questions, parse_option_question
from vlmforge.shapes.foundation.reader import ReaderSpec, teach_reading

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle", "star", "hexagon", "diamond"]
CLOSING = "Answer with the option's letter from the given choices directly."


def mc_record(image: str, question: str, choices: list[str], answer: str, subtask: str) -> dict:
    lines = "\n".join(f"{letter}. {text}" for letter, text in zip("ABCD", choices, strict=True))
    human = f"{IMAGE_TOKEN}\n{question}\n{lines}\n{CLOSING}"
    letter = "ABCD"[choices.index(answer)]
    turns = [{"from": "human", "value": human}, {"from": "gpt", "value": letter}]
    return {"image": image, "task": "mc", "subtask": subtask, "choices": choices, "answer": letter,
            "conversations": turns}  # fmt: skip


def add_mc_questions(root) -> int:
    """One colour and one shape multiple-choice question per captioned train scene of ``write_world``."""
    rng = random.Random(0)
    captions = [json.loads(line) for line in (root / "train" / "captions.jsonl").read_text().splitlines()]
    with (root / "train" / "instruct.jsonl").open("a") as out:
        for caption in captions:
            color, shape = caption["caption"].split()[1:]
            for vocab, answer, subtask in ((COLOURS, color, "color"), (SHAPES, shape, "shape")):
                choices = [answer, *rng.sample([v for v in vocab if v != answer], 3)]
                rng.shuffle(choices)
                question = "What colour is the shape?" if subtask == "color" else "What shape is it?"
                out.write(json.dumps(mc_record(caption["image"], question, choices, answer, subtask)) + "\n")
    return 2 * len(captions)


@pytest.fixture(scope="module")
def mc_world(tmp_path_factory):
    root = write_world(tmp_path_factory.mktemp("mc") / "w", n=16)
    n = add_mc_questions(root)
    world = read_world(root, "train")
    tok = train_tokenizer(tokenizer_texts(world), 300, model_max_length=TINY_LM.max_position_embeddings)
    questions = option_questions(root, "train", scene_lookup(root, world.image_paths, "train"))
    return root, world, tok, questions, n


def test_a_record_splits_around_its_option_lines():
    record = mc_record("i.png", "What colour is the star?", ["red", "blue", "green", "orange"], "green", "color")
    q = parse_option_question(record, scene=3, where="f.jsonl:7")
    assert q.stem == [IMAGE_TOKEN, "What colour is the star?"] and q.closing == [CLOSING]
    assert (q.answer, q.kind, q.scene, q.choices) == ("green", "color", 3, ["red", "blue", "green", "orange"])


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"choices": ["red"]}, "choices"),
        ({"answer": "E"}, "answer"),
        ({"choices": ["red", "blue", "green", "pink"]}, "option lines"),
    ],
)
def test_a_malformed_record_is_named(change, named):
    record = {**mc_record("i.png", "Which?", ["red", "blue", "green", "orange"], "red", "color"), **change}
    with pytest.raises(DataError, match=named) as error:
        parse_option_question(record, scene=0, where="f.jsonl:7")
    assert "f.jsonl:7" in str(error.value)


def test_draws_shuffle_fresh_options_of_the_same_kind_and_label_the_answers_letter(mc_world):
    root, world, tok, questions, n = mc_world
    assert len(questions) == n
    sampler = OptionSampler(questions, tok, patches=9, lookup_share=0.0)
    assert sorted(sampler.pools["color"]) == sorted(COLOURS) and sorted(sampler.pools["shape"]) == sorted(SHAPES)
    rng, letters = random.Random(0), Counter()
    for _ in range(200):
        scene, ids, labels = sampler.draw(rng)
        prompt = tok.decode([t for t, label in zip(ids, labels, strict=True) if label == -100])
        letter = tok.decode([t for t in labels if t != -100], skip_special_tokens=True).strip()
        options = dict(line.split(". ", 1) for line in prompt.split("\n") if line[:3] in ("A. ", "B. ", "C. ", "D. "))
        kind = "color" if "colour" in prompt else "shape"
        vocab = COLOURS if kind == "color" else SHAPES
        truth = world.regions[scene][0][1].split()[1 if kind == "color" else 2]
        assert sorted(options) == list("ABCD") and len(set(options.values())) == 4
        assert set(options.values()) <= set(vocab)  # the other options come from the same kind's pool
        assert options[letter] == truth  # the label is the letter of the scene's true answer
        assert ids.count(tok.convert_tokens_to_ids(IMAGE_TOKEN)) == 9
        letters[letter] += 1
    assert all(letters[x] > 25 for x in "ABCD")  # the answer's place is reshuffled, not kept from the record
    again = OptionSampler(questions, tok, patches=9, lookup_share=0.0)
    assert again.draw(random.Random(1)) == sampler.draw(random.Random(1))


def test_the_letter_lookup_names_the_answer_and_keeps_the_image(mc_world):
    _, _, tok, questions, _ = mc_world
    sampler = OptionSampler(questions, tok, patches=9, lookup_share=1.0)
    _, ids, labels = sampler.draw(random.Random(0))
    prompt = tok.decode([t for t, label in zip(ids, labels, strict=True) if label == -100])
    letter = tok.decode([t for t in labels if t != -100], skip_special_tokens=True).strip()
    asked = prompt.split("Which option is ")[1].split("?")[0]
    assert f"\n{letter}. {asked}\n" in prompt and "What colour" not in prompt and "What shape" not in prompt
    assert ids.count(tok.convert_tokens_to_ids(IMAGE_TOKEN)) == 9


def test_the_box_phase_teaches_multiple_choice_when_asked(mc_world):
    root, world, tok, _, n = mc_world
    spec = ReaderSpec(steps=4, batch_size=8, tasks=("color",), warm_fraction=0.0, box_steps=3, mc_fraction=0.5,
                      box_fraction=0.25)  # fmt: skip
    assert spec.phase_tasks() == ("color", "rec", "mc")
    model, _ = pretrain_lm(tok, lm_texts(world, tok), replace(TINY_LM, steps=1), seed=0, progress=False)
    log = teach_reading(model, tok, root, world.image_paths, world.regions, TINY_VISION, spec, progress=False)
    assert log.extra["mc_samples"] == n and log.extra["box_steps"] == 3
    assert ReaderSpec(mc_fraction=0.0).phase_tasks() == ("color", "shape", "count", "position", "exist", "rec")


def test_box_and_multiple_choice_shares_cannot_exceed_one_batch():
    with pytest.raises(ConfigError, match="at most 1"):
        ReaderSpec(box_fraction=0.5, mc_fraction=0.75)


def test_a_world_without_multiple_choice_records_is_named(tmp_path):
    root = write_world(tmp_path / "w", n=4)
    world = read_world(root, "train")
    with pytest.raises(DataError, match="no multiple-choice records") as error:
        option_questions(root, "train", scene_lookup(root, world.image_paths, "train"))
    assert "instruct.jsonl" in str(error.value)
