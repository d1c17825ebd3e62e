"""Questions in several phrasings: deterministic per seed, answers unchanged, held-out phrasings only in the test
split's paraphrased records, and the eval tasks that read them."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from vlmforge.errors import ConfigError, DataError
from vlmforge.eval.tasks import get_task
from vlmforge.shapes.world import WorldConfig, build_world
from vlmforge.shapes.world.build import PHRASED
from vlmforge.shapes.world.phrasings import HELD_OUT, SHORT_ANSWER, TRAIN, held_out_phrasing, train_phrasing

SMALL = {"train_size": 80, "test_size": 20}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def prompts(path: Path) -> list[str]:
    return [r["conversations"][0]["value"].removeprefix("<image>\n") for r in read_jsonl(path)]


def frame_pattern(frame: str) -> re.Pattern:
    """A frame as a regex over a question's first line: every slot a run of words."""
    parts = re.split(r"\{(\w+)\}", frame)
    body = "".join(re.escape(p) if i % 2 == 0 else r"[a-z ]+" for i, p in enumerate(parts))
    return re.compile(rf"^{body}(\n|$)")


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    root = tmp_path_factory.mktemp("phrasings")
    varied = build_world(WorldConfig(seed=5, **SMALL), root / "varied", progress=False)
    plain = build_world(WorldConfig(seed=5, paraphrase=0.0, **SMALL), root / "plain", progress=False)
    return varied, plain


def test_training_questions_vary_in_frame_spelling_and_suffix(worlds):
    varied, _ = worlds
    train = prompts(varied.records("train", PHRASED))
    frames = {f for fs in TRAIN.values() for f in fs if any(frame_pattern(f).match(p) for p in train)}
    assert len(frames) >= 15  # most of the training frames occur in a small world
    assert any(" color " in p for p in train) and any(" colour " in p for p in train)
    short = [p for p in train if not p.startswith("Give the") and "\nA. " not in p]
    with_suffix = sum(p.endswith(SHORT_ANSWER) for p in short)
    assert 0.5 * len(short) < with_suffix < len(short)  # the suffix is left out of some short-answer questions


def test_same_seed_same_phrasings_and_another_seed_differs(worlds, tmp_path):
    varied, _ = worlds
    again = build_world(WorldConfig(seed=5, **SMALL), tmp_path / "again", progress=False)
    for split, name in (("train", PHRASED), ("train", "instruct"), ("train", "conversations"), ("test", "paraphrased")):
        assert again.records(split, name).read_bytes() == varied.records(split, name).read_bytes()
    rng_a, rng_b = random.Random(1), random.Random(2)
    draws_a = [train_phrasing("color", {"x": "red circle"}, rng_a, 1.0) for _ in range(20)]
    draws_b = [train_phrasing("color", {"x": "red circle"}, rng_b, 1.0) for _ in range(20)]
    assert draws_a != draws_b


def test_answers_and_test_questions_are_unchanged_by_phrasing(worlds):
    varied, plain = worlds
    keys = ("id", "task", "answer", "subtask", "choices", "boxes", "scene_id", "image")
    train_v, train_p = read_jsonl(varied.records("train", PHRASED)), read_jsonl(plain.instruct("train"))
    assert [[r.get(k) for k in keys] for r in train_v] == [[r.get(k) for k in keys] for r in train_p]
    pairs = zip(prompts(varied.records("train", PHRASED)), prompts(plain.instruct("train")), strict=True)
    assert sum(a != b for a, b in pairs) > 20
    # The files the foundation LM reads keep the templates, whatever the share.
    for name in ("instruct", "conversations", "captions"):
        assert varied.records("train", name).read_bytes() == plain.records("train", name).read_bytes()
    # The test split's templated questions are the canonical template, whatever the training share.
    assert varied.instruct("test").read_bytes() == plain.instruct("test").read_bytes()
    canonical = [frame_pattern(fs[0]) for fs in TRAIN.values()]
    for text in prompts(plain.instruct("train")):
        stem = text.split("\n")[0]
        assert any(p.match(stem) for p in canonical), text
        assert " color " not in text


def test_held_out_phrasings_never_occur_in_training_records(worlds):
    varied, _ = worlds
    held_out = [frame_pattern(f) for fs in HELD_OUT.values() for f in fs]
    for name in ("instruct", "conversations", PHRASED):
        for record in read_jsonl(varied.records("train", name)):
            for turn in record["conversations"][0::2]:
                text = turn["value"].removeprefix("<image>\n")
                assert not any(p.match(text) for p in held_out), text
    paraphrased = read_jsonl(varied.records("test", "paraphrased"))
    train_texts = set(prompts(varied.records("train", PHRASED))) | set(prompts(varied.instruct("train")))
    assert paraphrased and all(
        any(p.match(r["conversations"][0]["value"].removeprefix("<image>\n")) for p in held_out) for r in paraphrased
    )
    assert not {r["conversations"][0]["value"].removeprefix("<image>\n") for r in paraphrased} & train_texts


def test_paraphrased_records_ask_the_test_questions_again(worlds):
    varied, _ = worlds
    test = {(r["scene_id"], r["task"], r["answer"], r.get("subtask")) for r in read_jsonl(varied.instruct("test"))}
    paraphrased = read_jsonl(varied.records("test", "paraphrased"))
    assert Counter(r["task"] for r in paraphrased).keys() == set(HELD_OUT)
    assert all((r["scene_id"], r["task"], r["answer"], r.get("subtask")) in test for r in paraphrased)
    assert all(r["id"].startswith(r["scene_id"] + "-p") for r in paraphrased)
    assert varied.info()["files"]["test"]["paraphrased"] == "test/paraphrased.jsonl"
    assert not (varied.root / "train" / "paraphrased.jsonl").exists()


def test_held_out_phrasing_fills_its_slots():
    text = held_out_phrasing("exist", {"a_x": "an orange star"}, random.Random(0))
    assert "an orange star" in text and "{" not in text
    with pytest.raises(ConfigError, match="paraphrase"):
        WorldConfig(paraphrase=1.5)


def test_paraphrased_eval_tasks_read_their_own_records(worlds):
    varied, _ = worlds
    data = {"world": str(varied.root), "world_split": "test"}
    templated = get_task("shapes_color").load(data)
    paraphrased = get_task("shapes_paraphrased_color").load(data)
    assert paraphrased and all("-p" in s.id for s in paraphrased) and all("-q" in s.id for s in templated)
    assert {s.target for s in paraphrased} <= set(varied.info()["vocab"]["colors"])
    assert all(any(frame_pattern(f).match(s.prompt) for f in HELD_OUT["color"]) for s in paraphrased)
    exist = get_task("shapes_paraphrased_exist").load(data)
    assert {s.meta["type"] for s in exist} <= {"positive", "adversarial", "random"} and exist


def test_a_world_without_paraphrased_records_is_a_clear_error(tmp_path):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "instruct.jsonl").write_text("")
    with pytest.raises(DataError, match="paraphrased.jsonl"):
        get_task("shapes_paraphrased_color").load({"world": str(tmp_path)})


def test_ui_examples_are_phrasings_the_lab_trains_on():
    from vlmforge.serve.ui import EXAMPLE_QUESTIONS

    frames = [frame_pattern(f) for fs in TRAIN.values() for f in fs]
    for question in EXAMPLE_QUESTIONS:
        assert any(p.match(question) for p in frames), question
