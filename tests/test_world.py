"""The shapes world: determinism, split disjointness, and every answer checked against the scene and the pixels."""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlmforge.errors import ConfigError
from vlmforge.shapes.world import TASKS, WorldConfig, WorldPaths, build_world, chance_level, sample_scenes
from vlmforge.shapes.world.commands import register
from vlmforge.shapes.world.config import COLOR_RGB, plural
from vlmforge.shapes.world.render import cell_bounds
from vlmforge.shapes.world.scene import split_of

SMALL = {"train_size": 60, "test_size": 20}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> WorldPaths:
    return build_world(WorldConfig(seed=3, **SMALL), tmp_path_factory.mktemp("world"), progress=False)


def world_bytes(root: Path) -> dict[str, bytes]:
    """Every file of the world, world.json included (caches are keyed on it), by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
    config = WorldConfig(seed=7, train_size=15, test_size=5)
    a = world_bytes(build_world(config, tmp_path / "a", progress=False).root)
    b = world_bytes(build_world(config, tmp_path / "b", progress=False).root)
    c = world_bytes(build_world(WorldConfig(seed=8, train_size=15, test_size=5), tmp_path / "c", progress=False).root)
    assert a == b
    assert a.keys() == c.keys()  # same layout and names ...
    assert a["train/scenes.jsonl"] != c["train/scenes.jsonl"]  # ... other scenes
    assert a["images/train/train-000000.png"] != c["images/train/train-000000.png"]


def test_train_and_test_scenes_are_disjoint_across_seeds():
    config = WorldConfig(seed=0, train_size=400, test_size=60)
    scenes = sample_scenes(config)
    train_keys = {s.key for s in scenes["train"]}
    test_keys = {s.key for s in scenes["test"]}
    assert len(train_keys) == 400 and len(test_keys) == 60  # distinct within a split
    assert not train_keys & test_keys
    assert all(split_of(k, config.test_fraction) == "test" for k in test_keys)
    # A test scene of another seed's world is never a train scene of this one.
    other = sample_scenes(WorldConfig(seed=1, train_size=400, test_size=60))
    assert not {s.key for s in other["test"]} & train_keys


def test_layout_and_counts(world):
    info = world.info()
    for split, size in (("train", SMALL["train_size"]), ("test", SMALL["test_size"])):
        scenes = read_jsonl(world.scenes(split))
        assert len(scenes) == size == info["counts"][split]["images"]
        assert len(read_jsonl(world.captions(split))) == size
        assert len(read_jsonl(world.instruct(split))) == info["counts"][split]["records"]["instruct"]
        for name in ("captions", "instruct", "conversations"):
            for rec in read_jsonl(world.records(split, name)):
                assert (world.root / rec["image"]).is_file(), rec["id"]
    assert info["vocab"]["positions"][4] == "center"
    assert set(info["chance"]) == set(TASKS)


def test_every_record_has_image_token_exactly_once_in_first_human_turn(world):
    for split in ("train", "test"):
        for name in ("captions", "instruct", "conversations"):
            lines = world.records(split, name).read_text(encoding="utf-8").splitlines()
            for line in lines:
                rec = json.loads(line)
                turns = rec["conversations"]
                assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
                assert sum(t["value"].count("<image>") for t in turns) == 1, rec["id"]
                assert turns[0]["value"].startswith("<image>")


def _assert_boxes_match_pixels(paths: WorldPaths, split: str, config: WorldConfig) -> None:
    side = config.image_size
    for scene in read_jsonl(paths.scenes(split)):
        pixels = np.asarray(Image.open(paths.root / scene["image"]).convert("RGB"))
        for obj in scene["objects"]:
            # One object per cell, so the pixels of its colour inside its cell are exactly its pixels.
            x0, y0, x1, y1 = cell_bounds(obj["row"], obj["col"], config)
            ys, xs = np.nonzero((pixels[y0:y1, x0:x1] == COLOR_RGB[obj["color"]]).all(axis=-1))
            assert len(xs) > 0, scene["id"]
            drawn = [int(v) for v in (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1)]
            assert obj["box_px"] == drawn, scene["id"]
            assert obj["box"] == [round(v / side, 3) for v in drawn]


def test_boxes_are_exactly_the_drawn_pixels(world):
    _assert_boxes_match_pixels(world, "test", WorldConfig(**SMALL))


def test_boxes_stay_exact_on_a_noisy_background_and_other_size(tmp_path):
    config = WorldConfig(seed=4, train_size=1, test_size=15, image_size=80, background_noise=20)
    paths = build_world(config, tmp_path, progress=False)
    background = np.asarray(Image.open(paths.root / read_jsonl(paths.scenes("test"))[0]["image"]))
    assert len(np.unique(background.reshape(-1, 3), axis=0)) > 50  # the noise is really there
    _assert_boxes_match_pixels(paths, "test", config)


def _referent(question: str, objects: list[dict], vocab: dict) -> dict:
    """The one object a question's noun phrase names (the test's own parse of the prompt)."""
    words = re.search(r" the ([a-z ]+?)(?: object)?[?.]", question).group(1).split()
    attrs = {}
    for word in words:
        for key, values in (("size", vocab["sizes"]), ("color", vocab["colors"]), ("shape", vocab["shapes"])):
            if word in values:
                attrs[key] = word
    matches = [o for o in objects if all(o[k] == v for k, v in attrs.items())]
    assert len(matches) == 1, f"ambiguous or absent referent in {question!r}"
    return matches[0]


def test_every_answer_is_consistent_with_its_scene(world):
    vocab = world.info()["vocab"]
    for split in ("train", "test"):
        scenes = {s["id"]: s for s in read_jsonl(world.scenes(split))}
        seen = Counter()
        paraphrased = read_jsonl(world.records(split, "paraphrased")) if split == "test" else []
        for rec in read_jsonl(world.instruct(split)) + paraphrased:
            objects = scenes[rec["scene_id"]]["objects"]
            question, answer = rec["conversations"][0]["value"], rec["conversations"][1]["value"]
            assert answer == rec["answer"]
            task = rec["task"]
            seen[task] += 1
            if task == "count":
                m = re.search(r"(?:How many|number of) (\w+)", question)
                total = m.group(1) in ("objects", "shapes")  # the phrasings say either for all of them
                expected = len(objects) if total else sum(plural(o["shape"]) == m.group(1) for o in objects)
                assert answer == str(expected)
            elif task == "exist":
                article, color, shape = re.search(r"(?:there|see|contain) (an?) (\w+) (\w+)\b", question).groups()
                assert article == ("an" if color[0] in "aeiou" else "a"), question  # "an orange star"
                present = any(o["color"] == color and o["shape"] == shape for o in objects)
                assert answer == ("Yes" if present else "No")
            elif task == "color":
                assert answer == _referent(question, objects, vocab)["color"]
            elif task == "shape":
                assert answer == _referent(question, objects, vocab)["shape"]
            elif task == "position":
                assert answer == _referent(question, objects, vocab)["position"]
            elif task == "rec":
                obj = _referent(question, objects, vocab)
                assert rec["boxes"] == [obj["box"]]
                assert answer == "[" + ",".join(f"{v:.3f}" for v in obj["box"]) + "]"
            elif task == "mc":
                stem = question.split("\n")[1]
                obj = _referent(stem, objects, vocab)
                choices = rec["choices"]
                assert len(choices) == 4 == len(set(choices))
                lines = [line for line in question.split("\n") if re.match(r"^[A-D]\. ", line)]
                assert lines == [f"{letter}. {text}" for letter, text in zip("ABCD", choices, strict=True)]
                truth = obj["color"] if re.search(r"\bcolou?r\b", stem) else obj["shape"]
                assert choices["ABCD".index(answer)] == truth
                assert question.endswith("Answer with the option's letter from the given choices directly.")
        assert set(seen) == set(TASKS)


def test_exist_is_balanced_with_adversarial_negatives(world):
    records = [r for r in read_jsonl(world.instruct("train")) if r["task"] == "exist"]
    answers = Counter(r["answer"] for r in records)
    assert answers["Yes"] == answers["No"] > 0
    kinds = Counter(r["subtask"] for r in records if r["answer"] == "No")
    assert kinds["adversarial"] > 0 and kinds["random"] > 0


def test_conversations_repeat_the_single_question_records(world):
    singles = Counter()
    for rec in read_jsonl(world.instruct("test")):
        singles[(rec["scene_id"], rec["conversations"][0]["value"].removeprefix("<image>\n"), rec["answer"])] += 1
    multi = Counter()
    for rec in read_jsonl(world.conversations("test")):
        assert rec["task"] == "multi"
        turns = rec["conversations"]
        for human, gpt in zip(turns[0::2], turns[1::2], strict=True):
            multi[(rec["scene_id"], human["value"].removeprefix("<image>\n"), gpt["value"])] += 1
    assert multi == singles


def test_chance_levels_follow_the_config():
    config = WorldConfig(colors=("red", "green", "blue", "yellow"), shapes=("circle", "square"), max_objects=5)
    assert chance_level("color", config) == 1 / 4
    assert chance_level("shape", config) == 1 / 2
    assert chance_level("count", config) == 1 / 5
    assert chance_level("position", config) == 1 / 9
    assert chance_level("exist", config) == 0.5
    assert chance_level("mc", config) == 0.25
    assert 0 < chance_level("rec", config) < 1 / 9
    with pytest.raises(ConfigError):
        chance_level("nope", config)


@pytest.mark.parametrize(
    "bad",
    [
        {"shapes": ("circle", "hexagon")},
        {"max_objects": 10},
        {"image_size": 10},
        {"questions": {"riddle": 1}},
    ],
)
def test_bad_config_is_a_config_error(bad):
    with pytest.raises(ConfigError):
        WorldConfig(**bad)


def test_too_small_vocabulary_is_reported():
    tiny = WorldConfig(shapes=("circle",), colors=("red",), sizes=("small",), max_objects=1, train_size=50, test_size=5)
    with pytest.raises(ConfigError, match="distinct scenes"):
        sample_scenes(tiny)


def test_rebuild_reuses_same_world_and_refuses_a_different_one(tmp_path):
    config = WorldConfig(train_size=5, test_size=2)
    paths = build_world(config, tmp_path, progress=False)
    stamp = paths.world_json.stat().st_mtime_ns
    assert build_world(config, tmp_path, progress=False).world_json.stat().st_mtime_ns == stamp
    other = WorldConfig(train_size=6, test_size=2)
    with pytest.raises(ConfigError, match="different shapes world"):
        build_world(other, tmp_path, progress=False)
    build_world(other, tmp_path, progress=False, overwrite=True)
    assert len(read_jsonl(paths.scenes("train"))) == 6
    assert len(list(paths.images("train").iterdir())) == 6


def test_cli_writes_the_layout(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="vlmforge")
    register(parser.add_subparsers(dest="command"))
    out = tmp_path / "w"
    flags = "--train 12 --test 4 --seed 5 --image-size 48 --max-objects 3 --shapes circle,square,star,cross --quiet"
    args = parser.parse_args(["world", "--out", str(out), *flags.split(" ")])
    assert args.handler(args) == 0
    assert "train: 12 images" in capsys.readouterr().out
    info = json.loads((out / "world.json").read_text())
    assert info["config"]["image_size"] == 48
    assert info["vocab"]["shapes"] == ["circle", "square", "star", "cross"]
    for split, n in (("train", 12), ("test", 4)):
        assert len(list((out / "images" / split).glob("*.png"))) == n
        for name in ("scenes", "captions", "instruct", "conversations"):
            assert (out / split / f"{name}.jsonl").is_file()
        for scene in read_jsonl(out / split / "scenes.jsonl"):
            assert Image.open(out / scene["image"]).size == (48, 48)
            assert 1 <= len(scene["objects"]) <= 3


def test_parquet_format_holds_the_same_records(tmp_path):
    datasets = pytest.importorskip("datasets")
    config = WorldConfig(seed=2, train_size=8, test_size=3)
    jsonl = build_world(config, tmp_path / "j", progress=False)
    parquet = build_world(config, tmp_path / "p", fmt="parquet", progress=False)
    assert WorldPaths.open(parquet.root).instruct("train").suffix == ".parquet"
    rows = datasets.Dataset.from_parquet(str(parquet.instruct("train"))).to_list()
    expected = read_jsonl(jsonl.instruct("train"))
    assert [r["id"] for r in rows] == [r["id"] for r in expected]
    assert [r["answer"] for r in rows] == [r["answer"] for r in expected]
    mc = [(r["choices"], e["choices"]) for r, e in zip(rows, expected, strict=True) if e["task"] == "mc"]
    assert mc and all(a == b for a, b in mc)


def test_conversation_turn_order_varies_between_images(tmp_path):
    root = build_world(WorldConfig(seed=0, train_size=40, test_size=4), tmp_path / "w", progress=False).root
    records = [json.loads(line) for line in (root / "train" / "conversations.jsonl").read_text().splitlines()]
    first_tasks = {r["tasks"][0] for r in records}
    # A fixed order would let a model learn answer types from the turn position instead of the question.
    assert len(first_tasks) >= 4
