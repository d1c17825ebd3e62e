"""The shapes world's grounding tasks for Genixer: off by default (the default world is unchanged), exact when on,
and every record is one the Genixer builder accepts as its task."""

from __future__ import annotations

import json

from vlmforge.geometry import iou
from vlmforge.shapes.world.build import build_world
from vlmforge.shapes.world.config import DEFAULT_QUESTIONS, GROUNDING_TASKS, WorldConfig
from vlmforge.synth.genixer.build import generator_record
from vlmforge.synth.genixer.parse import parse_output


def _records(root, name="instruct"):
    return [json.loads(x) for x in (root / "train" / f"{name}.jsonl").read_text().splitlines()]


def test_grounding_tasks_are_off_by_default_and_leave_the_world_unchanged(tmp_path):
    plain = build_world(WorldConfig(train_size=12, test_size=3), tmp_path / "a", progress=False)
    on = WorldConfig(train_size=12, test_size=3, questions={**DEFAULT_QUESTIONS, **dict.fromkeys(GROUNDING_TASKS, 1)})
    grounded = build_world(on, tmp_path / "b", progress=False)
    a, b = _records(plain.root), _records(grounded.root)
    assert not {r["task"] for r in a} & set(GROUNDING_TASKS)
    assert [r for r in b if r["task"] not in GROUNDING_TASKS] == a  # the standard questions are untouched
    for left, right in zip(sorted((plain.root / "images" / "train").iterdir()),
                           sorted((grounded.root / "images" / "train").iterdir()), strict=True):  # fmt: skip
        assert left.read_bytes() == right.read_bytes()
    assert set(GROUNDING_TASKS) <= set(json.loads(grounded.world_json.read_text())["tasks"])


def test_grounding_answers_are_exact_and_parse_as_their_task(tmp_path):
    config = WorldConfig(train_size=40, test_size=3, questions=dict.fromkeys(GROUNDING_TASKS, 1))
    root = build_world(config, tmp_path / "w", progress=False).root
    records = _records(root)
    scenes = {s["id"]: s for s in _records(root, "scenes")}
    seen = set()
    for rec in records:
        objects = scenes[rec["scene_id"]]["objects"]
        built = generator_record(rec, rec["id"])
        parsed = parse_output(built["conversations"][1]["value"], rec["task"])
        seen.add(rec["task"])
        for box in parsed.boxes:  # every cited box is exactly one object's box
            assert max(iou(box, o["box"]) for o in objects) > 0.99
        if rec["task"] == "reg":
            (o,) = [o for o in objects if o["box"] == rec["boxes"][0]]
            assert rec["answer"] == f"{o['size']} {o['color']} {o['shape']}"
        if rec["task"] == "qcba":
            a, b = ([o for o in objects if o["box"] == box][0] for box in rec["boxes"])
            key = "col" if rec["subtask"] == "to the left of" else "row"
            assert parsed.pairs[0][1].endswith("Yes." if a[key] < b[key] else "No.")
        if rec["task"] == "pointqa":
            (o,) = [o for o in objects if o["box"] == parsed.boxes[-1]]
            name = parsed.pairs[0][0].rsplit("holds the ", 1)[1].rstrip("?").split()
            assert set(name) <= {o["size"], o["color"], o["shape"]}
        if rec["task"] == "ref_dialogue":
            assert len(parsed.pairs) >= 2
    assert seen == set(GROUNDING_TASKS)
