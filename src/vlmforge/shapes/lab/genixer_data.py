"""The Genixer lab's data: the labeled fraction L, the unlabeled pool from a second world, and the judge's lessons.

Everything the lab trains on sits under one folder (``data/``): ``labeled/`` links to the labeled world and
``pool/`` holds the pool's images, so L's records and the synthetic records can share one training file.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

from vlmforge.data.records import load_records, save_records
from vlmforge.shapes.lab.genixer_truth import SceneTruth, record_pairs
from vlmforge.shapes.world import WorldConfig, build_world
from vlmforge.shapes.world.config import DEFAULT_QUESTIONS, GROUNDING_TASKS
from vlmforge.synth.genixer.judge import judge_prompt
from vlmforge.synth.genixer.tasks import clean_question

# One question of each grounding task per image, next to the default mix: all nine Genixer tasks exist.
# A dialogue keeps its first few turns: the world's conversations ask every question of the image, longer than
# the models' context and than a generator should write in one go.
DIALOGUE_TURNS = 3
GROUNDING_QUESTIONS = {**DEFAULT_QUESTIONS, **{task: 1 for task in GROUNDING_TASKS}}


def world_with_grounding(base: WorldConfig, out: Path, *, seed: int, train_size: int) -> Path:
    """The base world's settings with the grounding questions (and ``seed``/``train_size``), built or reused."""
    config = WorldConfig(**{**base.to_dict(), "seed": seed, "train_size": train_size, "questions": GROUNDING_QUESTIONS})
    return build_world(config, out, progress=False).root


def scene_records(world: Path, split: str = "train") -> list[dict[str, Any]]:
    return load_records(world / split / "scenes.jsonl")


def scene_key(record: dict[str, Any]) -> str:
    """What is in a scene (cell, size, colour, shape of each object), however it is drawn."""
    return ";".join(sorted(f"{o['row']},{o['col']},{o['size']},{o['color']},{o['shape']}" for o in record["objects"]))


def labeled_fraction(world: Path, fraction: float, data: Path) -> dict[str, Any]:
    """L: the first ``fraction`` of the world's train images, with all their records (image paths under
    ``data/labeled``). Writes ``data/L/{instruct,captions}.jsonl``; returns the images' ids and counts."""
    scenes = scene_records(world)
    keep = {s["id"] for s in scenes[: max(1, round(fraction * len(scenes)))]}
    link = data / "labeled"
    if not link.exists():
        link.symlink_to(world.resolve(), target_is_directory=True)
    out = data / "L"
    counts = {}
    for name, source in (("instruct", ["instruct", "conversations"]), ("captions", ["captions"])):
        records = [
            {**r, "image": f"labeled/{r['image']}", "conversations": r["conversations"][: 2 * DIALOGUE_TURNS]}
            for s in source
            for r in load_records(world / "train" / f"{s}.jsonl")
            if Path(r["image"]).stem in keep
        ]
        save_records(records, out / f"{name}.jsonl")
        counts[name] = len(records)
    return {"images": sorted(keep), "counts": counts, "folder": str(out)}


def build_pool(world: Path, pool_world: Path, data: Path) -> dict[str, Any]:
    """Copy the pool world's train images into ``data/pool`` -- all but those whose scene the labeled world
    already holds (train or test). Returns the kept scenes by image name and how many were dropped."""
    seen = {scene_key(s) for split in ("train", "test") for s in scene_records(world, split)}
    pool = data / "pool"
    pool.mkdir(parents=True, exist_ok=True)
    kept, dropped = {}, 0
    for scene in scene_records(pool_world):
        if scene_key(scene) in seen:
            dropped += 1
            continue
        seen.add(scene_key(scene))  # a scene drawn twice in the pool counts once
        name = Path(scene["image"]).name
        if not (pool / name).exists():
            shutil.copyfile(pool_world / scene["image"], pool / name)
        kept[name] = scene
    return {"scenes": kept, "duplicates_dropped": dropped}


def truths(scenes: dict[str, dict[str, Any]], world: Path) -> dict[str, SceneTruth]:
    """Every pool image's truth, keyed by image name."""
    config = WorldConfig(**json.loads((world / "world.json").read_text())["config"])
    return {name: SceneTruth.from_scene_record(scene, config) for name, scene in scenes.items()}


def judge_lessons(labeled: Path, world: Path, out: Path, seed: int = 0) -> int:
    """The judge's training records: each L record's pairs asked as the judge's question, answered "Yes"; the
    same question with the answer of another record of its task, answered "No" when the world says it is wrong.
    Returns how many records were written."""
    records = load_records(labeled)
    config = WorldConfig(**json.loads((world / "world.json").read_text())["config"])
    scenes = {Path(s["image"]).stem: s for s in scene_records(world)}
    rng, by_task, out_records = random.Random(seed), {}, []
    for rec in records:
        by_task.setdefault(rec.get("task", "multi"), []).append(rec)
    for rec in records:
        truth = SceneTruth.from_scene_record(scenes[Path(rec["image"]).stem], config)
        pairs = record_pairs(rec)
        other = record_pairs(rng.choice(by_task[rec.get("task", "multi")]))
        wrong = [*pairs[:-1], (pairs[-1][0], other[-1][1])]
        for k, (shown, answer) in enumerate(((pairs, "Yes"), (wrong, "No"))):
            if answer == "No" and truth.check(wrong):
                continue  # the other record's answer happens to be right here too
            turns = [{"from": "human", "value": f"<image>\n{judge_prompt(_as_record(shown))}"}]
            out_records.append({"id": f"{rec['id']}-judge{k}", "image": rec["image"],
                                "conversations": [*turns, {"from": "gpt", "value": answer}]})  # fmt: skip
    save_records(out_records, out)
    return len(out_records)


def _as_record(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    turns = []
    for q, a in pairs:
        # As the parser leaves a generated question: no evaluation suffix, which the judge never sees.
        turns += [{"from": "human", "value": clean_question(q)}, {"from": "gpt", "value": a}]
    return {"conversations": turns}
