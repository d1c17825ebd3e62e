"""The procedural own-data sets: deterministic, valid records, and answers that match what was drawn."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vlmforge.data.validate import validate_record
from vlmforge.testing import own_data
from vlmforge.testing import own_data_draw as draw


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module", params=sorted(own_data.DATASETS))
def built(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    return request.param, out, own_data.build(request.param, out, train=24, test=12, seed=3, val=6)


def test_same_seed_same_files_and_another_seed_differs(built, tmp_path):
    name, out, paths = built
    again = own_data.build(name, tmp_path / "again", train=24, test=12, seed=3, val=6)
    for split, path in paths.items():
        assert path.read_text() == again[split].read_text()
    for record in _records(paths["train"]):
        assert (out / record["image"]).read_bytes() == (tmp_path / "again" / record["image"]).read_bytes()
    other = own_data.build(name, tmp_path / "other", train=24, test=12, seed=4)
    assert other["train"].read_text() != paths["train"].read_text()


def test_records_pass_the_validator_and_ask_one_phrasing_per_kind(built):
    name, out, paths = built
    kinds = own_data.DATASETS[name].kinds
    answers = own_data.answers_by_kind(name)
    for split, path in paths.items():
        for index, record in enumerate(_records(path)):
            checked = validate_record(record, f"{path}:{index + 1}", out)
            question, reply = (turn["value"] for turn in checked["conversations"])
            assert question.startswith("<image>\n") and reply == record["answer"] == record["scene"][record["kind"]]
            assert reply in answers[record["kind"]]
            asked = question.removeprefix("<image>\n")
            if split.endswith("_reworded"):
                assert asked in kinds[record["kind"]].rewordings
            else:
                assert asked == kinds[record["kind"]].question
    training_questions = {r["conversations"][0]["value"] for r in _records(paths["train"])}
    reworded = {r["conversations"][0]["value"] for s in ("test_reworded", "val_reworded") for r in _records(paths[s])}
    assert not training_questions & reworded
    for split in ("test", "val"):
        ids = [r["id"] for r in _records(paths[split])]
        assert ids == [r["id"] for r in _records(paths[f"{split}_reworded"])]


def test_a_validation_split_has_its_own_images_and_leaves_train_and_test_unchanged(built, tmp_path):
    name, out, paths = built
    assert set(paths) == {"train", "test", "test_reworded", "val", "val_reworded"}
    images = {split: {r["image"] for r in _records(paths[split])} for split in ("train", "test", "val")}
    assert len(images["val"]) == 6
    assert not images["val"] & (images["train"] | images["test"])
    # drawn from a stream of its own, not a replay of another split's first scenes
    scenes = {split: [r["scene"] for r in _records(paths[split])][:6] for split in ("train", "test", "val")}
    assert scenes["val"] != scenes["train"] and scenes["val"] != scenes["test"]
    without = own_data.build(name, tmp_path / "without", train=24, test=12, seed=3)
    assert set(without) == {"train", "test", "test_reworded"}
    for split, path in without.items():
        assert path.read_text() == paths[split].read_text()


def _pixels(out, record) -> np.ndarray:
    return np.asarray(Image.open(out / record["image"]).convert("RGB")).astype(int)


def test_glyph_answers_match_the_drawn_pixels(tmp_path):
    paths = own_data.build("glyphs", tmp_path, train=40, test=0, seed=1)
    for record in _records(paths["train"]):
        scene, pixels = record["scene"], _pixels(tmp_path, record)
        colour = draw.COLOURS[scene["digit_colour"]]
        for name, (x0, y0, x1, y1) in draw.segment_boxes(*scene["xy"]).items():
            # the middle of a segment's long side, away from where segments overlap
            x, y = (x0 + x1) // 2, (y0 + y1) // 2
            lit = tuple(pixels[y, x]) == colour
            assert lit == (name in draw.DIGIT_SEGMENTS[scene["digit"]]), (record["id"], name)
        corner = pixels[:12, :12, 0]  # left of the digit, wider than a pattern period
        assert (len(np.unique(corner)) == 1) == (scene["pattern"] == "plain"), record["id"]


def test_pair_answers_match_the_drawn_pixels(tmp_path):
    paths = own_data.build("pairs", tmp_path, train=40, test=0, seed=1)
    for record in _records(paths["train"]):
        scene, pixels = record["scene"], _pixels(tmp_path, record)
        mask = (pixels == draw.COLOURS[scene["dot_colour"]]).all(axis=2)
        assert mask.sum() > 20, record["id"]
        ys, xs = np.nonzero(mask)
        dx, dy = xs.mean() - scene["centre"][0], ys.mean() - scene["centre"][1]
        seen = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("below" if dy > 0 else "above")
        assert seen == scene["relation"], record["id"]
        cx, cy = scene["centre"]
        grey = pixels[
            cy - draw.OBJECT_HALF : cy + draw.OBJECT_HALF + 1, cx - draw.OBJECT_HALF : cx + draw.OBJECT_HALF + 1
        ]
        assert (grey.min(axis=2) >= 150).sum() > 30, record["id"]  # the light-grey object is drawn there


def test_unknown_dataset_is_refused(tmp_path):
    with pytest.raises(ValueError, match="datasets: glyphs, pairs"):
        own_data.build("digits", tmp_path, train=1, test=1)
