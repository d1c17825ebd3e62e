"""Teaching the foundation LM to read object vectors (vlmforge.shapes.foundation.reader)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from itertools import combinations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from test_foundation import BUILD_SPEC, TINY_LM, TINY_VISION, write_world
from vlmforge.errors import DataError
from vlmforge.models.assemble import IMAGE_TOKEN
from vlmforge.models.tokenizer import train_tokenizer
from vlmforge.shapes.foundation.codes import embed_with_vectors, object_codes
from vlmforge.shapes.foundation.corpus import lm_texts, read_world, tokenizer_texts
from vlmforge.shapes.foundation.lm import new_lm, pretrain_lm
from vlmforge.shapes.foundation.reader import ReaderSpec, reading_samples, teach_reading
from vlmforge.shapes.foundation.reading import object_reading_accuracy

CELL = 1 / 3


def box(row: int, col: int) -> list[float]:
    return [col * CELL + 0.05, row * CELL + 0.05, (col + 1) * CELL - 0.05, (row + 1) * CELL - 0.05]


REGIONS = [
    [(box(0, 0), "a small red circle")],
    [(box(0, 0), "a small red square")],
    [(box(2, 2), "a small red circle"), (box(0, 0), "a large blue square")],
    [(box(1, 1), "a large blue square")],
    [(box(0, 0), "a large blue circle")],
]


def test_object_vectors_sum_word_and_pair_codes_drawn_in_a_fixed_order():
    v = object_codes(REGIONS, TINY_VISION, hidden_size=16, seed=0).vectors()
    assert v.shape == (5, 9, 16)
    # One generator draws, in order: a code per word (sorted), a row per patch (thrown away, so that what follows
    # stays what earlier builds drew), a code per pair of words of one phrase (sorted), the "empty" code.
    phrases = [words.split()[1:] for words in ("a small red circle", "a small red square", "a large blue square")]
    pairs = sorted({pair for ws in [*phrases, ["large", "blue", "circle"]] for pair in combinations(ws, 2)})
    generator = torch.Generator().manual_seed(0)
    word = dict(zip(["blue", "circle", "large", "red", "small", "square"], torch.randn(6, 16, generator=generator),
                    strict=True))  # fmt: skip
    torch.randn(9, 16, generator=generator)
    pair = dict(zip(pairs, torch.randn(len(pairs), 16, generator=generator), strict=True))
    empty = torch.randn(16, generator=generator)

    def expected(phrase: str) -> torch.Tensor:
        ws = phrase.split()[1:]
        return sum(word[w] for w in ws) + sum(pair[p] for p in combinations(ws, 2))

    # Every empty patch holds the same "empty" code; an object's vector is the same wherever it is: no "where".
    assert torch.equal(v[0, 4], empty) and torch.equal(v[0, 5], empty) and torch.equal(v[3, 0], empty)
    assert torch.allclose(v[0, 0], expected("a small red circle"), atol=1e-5)
    assert torch.equal(v[0, 0], v[2, 8]) and torch.allclose(v[2, 0], expected("a large blue square"), atol=1e-5)
    # The codes are fixed per seed, not learned: another seed, other codes.
    assert not torch.allclose(v, object_codes(REGIONS, TINY_VISION, hidden_size=16, seed=1).vectors())


def test_word_pair_codes_bind_the_words_of_one_object():
    v = object_codes(REGIONS, TINY_VISION, hidden_size=16, seed=0).vectors()
    # Not additive: circle - square depends on the colour and size it comes with (sums of word codes alone would not).
    assert not torch.allclose(v[0, 0] - v[1, 0], v[4, 0] - v[2, 0], atol=1e-3)


def test_held_out_scenes_get_the_codes_of_the_training_vocabulary():
    held_out = [[(box(1, 1), "a small red circle"), (box(2, 2), "a small green circle")]]
    train = object_codes(REGIONS, TINY_VISION, hidden_size=16, seed=0)
    test = object_codes(held_out, TINY_VISION, hidden_size=16, seed=0, vocabulary=REGIONS)
    assert torch.equal(test.codebook, train.codebook)  # the codes the LM was trained on, not redrawn
    assert torch.allclose(test.vectors()[0, 4], train.vectors()[0, 0])  # "small red circle" in another patch
    # "green" is not in the training vocabulary: that object reads as a "small circle", the unknown code left out.
    small_circle = object_codes([[(box(0, 0), "a small circle")]], TINY_VISION, 16, seed=0, vocabulary=REGIONS)
    assert torch.allclose(test.vectors()[0, 8], small_circle.vectors()[0, 0])
    # Without a vocabulary the codes are drawn for these scenes' own words: other rows, other vectors.
    assert not torch.equal(object_codes(held_out, TINY_VISION, hidden_size=16, seed=0).codebook, train.codebook)


@pytest.fixture(scope="module")
def reading_world(tmp_path_factory):
    """test_foundation's one-object world, with a tokenizer and an LM pretrained on its text."""
    root = write_world(tmp_path_factory.mktemp("reader_world"), n=48)
    world = read_world(root, "train")
    tok = train_tokenizer(tokenizer_texts(world), 300, model_max_length=TINY_LM.max_position_embeddings)
    return root, world, tok


def test_reading_samples_put_one_image_token_per_patch_and_label_only_answers(reading_world):
    root, world, tok = reading_world
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    samples = reading_samples(root, world.image_paths, tok, patches=9, tasks=("color",))
    assert {s.task for s in samples} == {"caption", "color"} and len(samples) == 2 * len(world.image_paths)
    for s in samples:
        assert s.input_ids.count(image_id) == 9
        labelled = [i for i, label in enumerate(s.labels) if label != -100]
        # Labels come after the image and only there: the answer (and its end of turn), never the prompt.
        assert labelled and min(labelled) > max(i for i, t in enumerate(s.input_ids) if t == image_id)
    # The scene of a record is the captioned image it names.
    first_question = next(s for s in samples if s.task == "color")
    assert first_question.scene == 0
    assert reading_samples(root, world.image_paths, tok, patches=9, tasks=("shape",))[-1].task == "caption"
    # A reading test's selection: no captions, the first 3 questions of each kind, as the full list has them.
    few = reading_samples(root, world.image_paths, tok, patches=9, tasks=("color",), captions=False, per_task=3)
    first = [s for s in samples if s.task == "color"][:3]
    assert [(s.scene, s.input_ids, s.task) for s in few] == [(s.scene, s.input_ids, s.task) for s in first]


def test_reading_samples_name_a_record_whose_image_is_not_captioned(reading_world, tmp_path):
    root, world, tok = reading_world
    bad = tmp_path / "w"
    write_world(bad, n=4)
    lines = (bad / "train" / "instruct.jsonl").read_text().splitlines()
    record = json.loads(lines[2])
    record["image"] = "images/train/nowhere.png"
    lines[2] = json.dumps(record)
    (bad / "train" / "instruct.jsonl").write_text("\n".join(lines) + "\n")
    for limit in (None, 1):  # a bad record is named even beyond the ones a reading test keeps
        with pytest.raises(DataError, match=r"instruct.jsonl:3.*nowhere.png"):
            reading_samples(bad, read_world(bad, "train").image_paths, tok, patches=9, tasks=("color",),
                            per_task=limit)  # fmt: skip


def _embedded(model, tok, sample, vectors) -> torch.Tensor:
    """One reading sample's input embeddings, its scene's object vectors in the image tokens' place."""
    ids = torch.tensor([sample.input_ids])
    return embed_with_vectors(
        model.get_input_embeddings(), ids, tok.convert_tokens_to_ids(IMAGE_TOKEN), vectors[[sample.scene]]
    )


def _colour_accuracy(model, tok, samples, vectors):
    """Teacher-forced: is the first answer token (the colour) predicted right, reading the object vectors?"""
    right = []
    with torch.no_grad():
        for s in samples:
            logits = model(inputs_embeds=_embedded(model, tok, s, vectors)).logits[0]
            at = next(i for i, label in enumerate(s.labels) if label != -100)
            right.append(int(logits[at - 1].argmax()) == s.labels[at])
    return sum(right) / len(right)


def test_teach_reading_makes_the_lm_answer_from_the_object_vectors(reading_world):
    root, world, tok = reading_world
    model, _ = pretrain_lm(tok, lm_texts(world, tok), replace(TINY_LM, steps=20), seed=0, progress=False)
    spec = ReaderSpec(steps=300, batch_size=16, lr=3e-3, warmup_steps=10, tasks=("color",), warm_fraction=0.0,
                      box_steps=0)  # fmt: skip
    log = teach_reading(model, tok, root, world.image_paths, world.regions, TINY_VISION, spec, progress=False)
    assert log.final_loss < log.first_loss and log.extra["samples"] == 2 * len(world.image_paths)
    vectors = object_codes(world.regions, TINY_VISION, model.config.hidden_size, seed=0).vectors()
    questions = [s for s in reading_samples(root, world.image_paths, tok, 9, ("color",)) if s.task == "color"]
    read = _colour_accuracy(model, tok, questions, vectors)
    # The same model with every scene's vectors shuffled: what it answers from the question alone.
    shuffled = vectors[torch.randperm(len(vectors), generator=torch.Generator().manual_seed(0))]
    blind = _colour_accuracy(model, tok, questions, shuffled)
    assert read >= 0.9 and read > blind + 0.3
    # The build's held-out test (here on a copy of the scenes as the "test" split) generates the same answers
    # greedily; the LM before reading answers them no better than the question alone allows.
    shutil.copytree(root / "train", root / "test", dirs_exist_ok=True)
    args = (tok, root, world.regions, TINY_VISION, spec)
    assert object_reading_accuracy(model, *args, split="test")["color"] >= 0.9
    unread, _ = pretrain_lm(tok, lm_texts(world, tok), replace(TINY_LM, steps=20), seed=0, progress=False)
    assert object_reading_accuracy(unread, *args, split="test")["color"] < 0.6


def test_a_build_records_the_reading_phase(tmp_path):
    from vlmforge.shapes.foundation.build import build_foundation, read_manifest

    assert BUILD_SPEC.reader.steps > 0
    root = write_world(tmp_path / "w", n=16)
    # The default: no text pretraining, the reading phase straight from a fresh LM.
    spec = replace(BUILD_SPEC, lm=replace(BUILD_SPEC.lm, steps=0))
    built = build_foundation(root, tmp_path / "f", spec, seed=0, progress=False)
    assert read_manifest(built.root)["lm"]["text_pretraining"] is None
    reader = read_manifest(built.root)["lm"]["reader"]
    assert reader["steps"] == BUILD_SPEC.reader.steps and reader["samples"] == 32
    assert reader["passed"] and reader["seed"] == 0 and len(reader["attempts"]) == 1  # no pass marks: one start
    assert AutoTokenizer.from_pretrained(built.lm).convert_tokens_to_ids(IMAGE_TOKEN) is not None


def _build_with_marks(tmp_path, marks: dict, lm_steps: int = 0, warm_tasks=("color", "shape"), warm_marks=None):
    """A tiny build with these pass marks (1.01: one no start can meet), 2 starts and 4 warm-up steps of 10, which a
    start that misses its warm-up marks extends by 4."""
    from vlmforge.shapes.foundation.build import build_foundation, read_manifest

    root = write_world(tmp_path / "w", n=16)
    reader_spec = replace(BUILD_SPEC.reader, steps=10, attempts=2, pass_marks=marks, warm_tasks=warm_tasks,
                          warm_marks=warm_marks or {}, warm_extension=4)  # fmt: skip
    spec = replace(BUILD_SPEC, lm=replace(BUILD_SPEC.lm, steps=lm_steps), reader=reader_spec)
    built = build_foundation(root, tmp_path / "f", spec, seed=3, progress=False)
    return root, built, spec, read_manifest(built.root)["lm"]["reader"]


def _assert_saved_lm_is_the_kept_attempt(root, built, spec, record) -> None:
    """With the kept seed's codes, the saved LM answers its train scenes exactly as that attempt's record says."""
    kept = next(a for a in record["attempts"] if a["seed"] == record["seed"])
    saved = AutoModelForCausalLM.from_pretrained(built.lm)
    again = object_reading_accuracy(saved, AutoTokenizer.from_pretrained(built.lm), root,
                                    read_world(root, "train").regions, spec.vision, spec.reader, record["seed"],
                                    split="train")  # fmt: skip
    assert {t: round(v, 4) for t, v in again.items()} == kept["train_reading"]


@pytest.mark.parametrize("lm_steps", [0, 8], ids=["fresh-lm", "text-pretrained-lm"])
def test_a_reader_that_misses_a_warm_up_mark_stops_there_and_starts_again(tmp_path, lm_steps):
    from vlmforge.shapes.foundation.restarts import RESTART_SEED_STRIDE

    root, built, spec, record = _build_with_marks(tmp_path, {"color": 1.01}, lm_steps, warm_marks={"color": 1.01})
    first, last = record["attempts"]
    assert [first["seed"], last["seed"]] == [3, 3 + RESTART_SEED_STRIDE] and not record["passed"]
    # The first start at the phase's rate, the restart at ReaderSpec.restart_lr.
    assert [first["lr"], last["lr"]] == [spec.reader.lr, spec.reader.restart_lr] and first["lr"] != last["lr"]
    # The first start stopped when its extended warm-up ended (4 + 4 steps), checked on the warm-up task only.
    assert first["stopped_after_warm"] == 8 and first["warm_extension"] == 4 and set(first["warm_reading"]) == {"color"}
    assert first["missed"] == {"color": first["warm_reading"]["color"]} and "train_reading" not in first
    # The last start always runs to the end (its warm-up extended too), so a complete reader is kept: that one.
    assert "stopped_after_warm" not in last and last["missed"]["color"] == last["train_reading"]["color"]
    assert record["seed"] == last["seed"] and last["warm_extension"] == 4 and record["steps"] == 14
    _assert_saved_lm_is_the_kept_attempt(root, built, spec, record)


def test_of_readers_that_all_miss_a_final_mark_the_closest_is_kept(tmp_path):
    # A warm-up mark on a task that is not a warm-up task is not checked early: both starts run to the end.
    root, built, spec, record = _build_with_marks(tmp_path, {"color": 1.01}, warm_tasks=("shape",),
                                                  warm_marks={"color": 1.01})  # fmt: skip
    attempts = record["attempts"]
    assert len(attempts) == 2 and not any("stopped_after_warm" in a for a in attempts) and not record["passed"]
    assert attempts[0]["final_loss"] != attempts[1]["final_loss"]  # two different starts really ran
    closest = max(attempts, key=lambda a: a["train_reading"]["color"])  # the first of equals
    assert record["seed"] == closest["seed"]
    _assert_saved_lm_is_the_kept_attempt(root, built, spec, record)


def test_a_mark_that_cannot_be_checked_is_recorded_as_unchecked_not_met(tmp_path):
    # "mc" is not among the reader's tasks, and "color" is not a warm-up task: neither mark can be checked, and the
    # manifest says so instead of counting them met.
    *_, record = _build_with_marks(tmp_path, {"color": 0.0, "mc": 0.9}, warm_tasks=("shape",),
                                   warm_marks={"color": 0.5})  # fmt: skip
    assert record["passed"] and len(record["attempts"]) == 1 and "mc" not in record["attempts"][0]["train_reading"]
    assert record["unchecked_marks"] == {"pass": ["mc"], "warm": ["color"]}


def _add_box_questions(root) -> int:
    """A referring expression per scene of a write_world folder, answered with its object's box (the world's format)."""
    scenes = [json.loads(line) for line in (root / "train" / "scenes.jsonl").read_text().splitlines()]
    captions = [json.loads(line) for line in (root / "train" / "captions.jsonl").read_text().splitlines()]
    with (root / "train" / "instruct.jsonl").open("a") as out:
        for scene, caption in zip(scenes, captions, strict=True):
            obj = scene["objects"][0]
            box = "[" + ",".join(f"{v:.3f}" for v in obj["box"]) + "]"
            human = f"{IMAGE_TOKEN}\nGive the bounding box of the {obj['color']} {obj['shape']}."
            turns = [{"from": "human", "value": human}, {"from": "gpt", "value": box}]
            record = {"id": f"b{scene['id']}", "image": caption["image"], "task": "rec", "answer": box}
            out.write(json.dumps({**record, "conversations": turns}) + "\n")
    return len(scenes)


def _mean_loss(model, tok, samples, vectors) -> float:
    with torch.no_grad():
        losses = [
            float(model(inputs_embeds=_embedded(model, tok, s, vectors), labels=torch.tensor([s.labels])).loss)
            for s in samples
        ]
    return sum(losses) / len(losses)


def test_the_box_phase_teaches_boxes_and_is_recorded(tmp_path):
    root = write_world(tmp_path / "w", n=32)
    n_boxes = _add_box_questions(root)
    world = read_world(root, "train")
    tok = train_tokenizer(tokenizer_texts(world), 300, model_max_length=TINY_LM.max_position_embeddings)
    boxes = [s for s in reading_samples(root, world.image_paths, tok, 9, ("rec",)) if s.task == "rec"]
    vectors = object_codes(world.regions, TINY_VISION, TINY_LM.hidden_size, seed=0).vectors()
    spec = ReaderSpec(steps=20, batch_size=8, lr=3e-3, warmup_steps=5, tasks=("color",), warm_fraction=0.0, box_lr=3e-3)
    loss, logs = {}, {}
    for box_steps in (0, 60):
        model, _ = pretrain_lm(tok, lm_texts(world, tok), replace(TINY_LM, steps=2), seed=0, progress=False)
        args = (model, tok, root, world.image_paths, world.regions, TINY_VISION, replace(spec, box_steps=box_steps))
        logs[box_steps] = teach_reading(*args, progress=False)
        loss[box_steps] = _mean_loss(model, tok, boxes, vectors)
    assert logs[60].extra["box_steps"] == 60 and logs[60].extra["box_samples"] == n_boxes
    assert "box_steps" not in logs[0].extra and logs[0].extra["box_samples"] == 0
    assert loss[60] < 0.7 * loss[0]  # the box answers' digits are learned, not only the colours


def test_the_object_reading_test_scores_right_answers_right_boxes_included(tmp_path):
    root = write_world(tmp_path / "w", n=8)
    _add_box_questions(root)
    shutil.copytree(root / "train", root / "test")
    world = read_world(root, "train")
    tok = train_tokenizer(tokenizer_texts(world), 300, model_max_length=TINY_LM.max_position_embeddings)
    model = new_lm(tok, TINY_LM)
    asked = [
        s for s in reading_samples(root, world.image_paths, tok, 9, ("color", "rec"), "test") if s.task != "caption"
    ]

    def answer_right(tasks: tuple[str, ...]) -> None:  # within the length the test allows, in the order it asks
        right = iter([[t for t in s.labels if t != -100] for s in asked if s.task in tasks])
        model.generate = lambda inputs_embeds, max_new_tokens, **_: [
            next(right)[:max_new_tokens] for _ in inputs_embeds
        ]

    spec = ReaderSpec(tasks=("color",), box_steps=1)
    answer_right(("color", "rec"))
    accuracy = object_reading_accuracy(model, tok, root, world.regions, TINY_VISION, spec, split="test")
    assert accuracy == {"color": 1.0, "rec": 1.0}  # a box is ~25 tokens, one per digit: none cut short
    answer_right(("color",))  # without the box phase, boxes are not asked
    no_boxes = replace(spec, box_steps=0)
    assert object_reading_accuracy(model, tok, root, world.regions, TINY_VISION, no_boxes, split="test") == {
        "color": 1.0
    }


def test_the_warm_up_reads_templated_questions_and_the_rest_of_the_phase_the_phrased_ones(reading_world, tmp_path):
    from vlmforge.shapes.foundation.reader import ReadingPhase

    root, world, tok = reading_world
    phrased_root = shutil.copytree(root, tmp_path / "world")
    lines = (phrased_root / "train" / "instruct.jsonl").read_text().splitlines()
    phrased = [line.replace("What color is the shape?", "Which colour is the shape?") for line in lines]
    (phrased_root / "train" / "instruct_phrased.jsonl").write_text("\n".join(phrased) + "\n")
    paths = [phrased_root / p.relative_to(root) for p in world.image_paths]
    spec = ReaderSpec(steps=10, box_steps=0, tasks=("color",), warm_tasks=("color",))

    def questions(samples):
        turns = [tok.decode(s.input_ids).split("user\n")[-1] for s in samples if s.task != "caption"]
        return {turn.split("<|im_end|>")[0].split(IMAGE_TOKEN)[-1].strip() for turn in turns}

    with_phrasings = ReadingPhase(new_lm(tok, TINY_LM, 0), tok, phrased_root, paths, world.regions, TINY_VISION, spec)
    assert questions(with_phrasings.warm) == {"What color is the shape?"}
    assert questions(with_phrasings.samples) == {"Which colour is the shape?"}
    # Same records in the same order (warm-up and phase ask the same type here): only the words differ.
    assert [(s.scene, s.task) for s in with_phrasings.samples] == [(s.scene, s.task) for s in with_phrasings.warm]
    templated_only = ReadingPhase(
        new_lm(tok, TINY_LM, 0), tok, root, world.image_paths, world.regions, TINY_VISION, spec
    )
    assert questions(templated_only.samples) == {"What color is the shape?"}
