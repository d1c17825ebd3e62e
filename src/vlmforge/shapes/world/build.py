"""Writing a shapes world to disk: images, scene annotations and LLaVA records per split, plus world.json.

Layout (image paths in records are relative to the world folder, the LLaVA convention)::

    WORLD/world.json
    WORLD/images/{split}/{scene_id}.png
    WORLD/{split}/scenes|captions|instruct|conversations.{jsonl|parquet}   (questions in their templates)
    WORLD/train/instruct_phrased.{jsonl|parquet}   (the instruct records, a share asked in other phrasings)
    WORLD/test/paraphrased.{jsonl|parquet}   (the test questions in held-out phrasings)

world.json is written last and doubles as the "finished" marker: a rebuild with the same config is a no-op, an
interrupted build is simply redone.
"""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL
from tqdm import tqdm

from vlmforge import __version__
from vlmforge.errors import ConfigError
from vlmforge.geometry import normalise_box
from vlmforge.shapes.world.config import GROUNDING_TASKS, SPLITS, TASKS, WORLD_VERSION, WorldConfig, chance_level
from vlmforge.shapes.world.describe import detailed_caption, short_caption
from vlmforge.shapes.world.grounding import grounding_questions
from vlmforge.shapes.world.questions import Question, held_out_questions, questions_for, rephrase_for_training
from vlmforge.shapes.world.render import render_scene
from vlmforge.shapes.world.scene import Scene, position_of, sample_scenes

IMAGE_TOKEN = "<image>"
RECORD_FILES = ("scenes", "captions", "instruct", "conversations")
# The train questions again, a share of them in other training phrasings: instruction tuning reads these, while
# the foundation LM's reading phase keeps to the templates, where it forms its lookups most reliably.
PHRASED = "instruct_phrased"
# The test questions again, asked in phrasings no training record uses (phrasings.HELD_OUT).
PARAPHRASED = "paraphrased"
EXTRA_FILES = {"train": PHRASED, "test": PARAPHRASED}
FORMATS = ("jsonl", "parquet")


@dataclass(frozen=True)
class WorldPaths:
    """Where everything of one world lives."""

    root: Path
    format: str = "jsonl"

    @property
    def world_json(self) -> Path:
        return self.root / "world.json"

    def images(self, split: str) -> Path:
        return self.root / "images" / split

    def records(self, split: str, name: str) -> Path:
        """``name`` is one of scenes, captions, instruct, conversations."""
        return self.root / split / f"{name}.{self.format}"

    def scenes(self, split: str) -> Path:
        return self.records(split, "scenes")

    def captions(self, split: str) -> Path:
        return self.records(split, "captions")

    def instruct(self, split: str) -> Path:
        return self.records(split, "instruct")

    def conversations(self, split: str) -> Path:
        return self.records(split, "conversations")

    def info(self) -> dict[str, Any]:
        """The parsed world.json."""
        try:
            return json.loads(self.world_json.read_text())
        except FileNotFoundError:
            msg = f"{self.root} is not a shapes world (no world.json); build one with `vlmforge world`"
            raise ConfigError(msg) from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"{self.world_json}: not valid JSON ({err})") from err

    @classmethod
    def open(cls, root: str | Path) -> WorldPaths:
        """Paths of an existing world, in the format it was written in."""
        root = Path(root)
        return cls(root, cls(root).info().get("format", "jsonl"))


def scene_record(scene: Scene, boxes_px: list, image: str, config: WorldConfig) -> dict[str, Any]:
    objects = [
        {
            "shape": o.shape,
            "color": o.color,
            "size": o.size,
            "position": position_of(o, config.grid),
            "row": o.row,
            "col": o.col,
            "box": normalise_box(box, config.image_size),
            "box_px": list(box),
        }
        for o, box in zip(scene.objects, boxes_px, strict=True)
    ]
    return {
        "id": scene.id,
        "image": image,
        "objects": objects,
        "caption": short_caption(scene),
        "detailed_caption": detailed_caption(scene, config),
    }


def caption_record(scene_rec: dict[str, Any], config: WorldConfig) -> dict[str, Any]:
    answer = scene_rec["caption"] if config.caption_style == "short" else scene_rec["detailed_caption"]
    return {
        "id": scene_rec["id"],
        "image": scene_rec["image"],
        "conversations": [{"from": "human", "value": IMAGE_TOKEN}, {"from": "gpt", "value": answer}],
        "task": "caption",
        "caption": scene_rec["caption"],
        "detailed_caption": scene_rec["detailed_caption"],
        "scene_id": scene_rec["id"],
    }


def _turns(q: Question, first: bool) -> list[dict[str, str]]:
    """A question's human/gpt turns, ``<image>`` before the first when ``first``; dialogue questions have several."""
    out = []
    for k, (prompt, answer) in enumerate(q.turns or [(q.prompt, q.answer)]):
        value = f"{IMAGE_TOKEN}\n{prompt}" if first and k == 0 else prompt
        out += [{"from": "human", "value": value}, {"from": "gpt", "value": answer}]
    return out


def instruct_records(scene_id: str, image: str, questions: list[Question], tag: str = "q") -> list[dict[str, Any]]:
    return [
        {
            "id": f"{scene_id}-{tag}{k:02d}",
            "image": image,
            "conversations": _turns(q, first=True),
            **q.fields(),
            "scene_id": scene_id,
        }
        for k, q in enumerate(questions)
    ]


def conversation_record(scene_id: str, image: str, questions: list[Question], seed: int) -> dict[str, Any]:
    """All of an image's questions as one multi-turn record: the image is encoded once for all of them.

    Turns are shuffled (deterministically per scene): in a fixed task order a model learns "the first answer is a
    colour" from the turn's position instead of reading the question, and then fails single-question prompts.
    """
    questions = list(questions)
    random.Random(f"turns-{seed}").shuffle(questions)
    turns = []
    for k, q in enumerate(questions):
        turns += _turns(q, first=k == 0)
    return {
        "id": f"{scene_id}-multi",
        "image": image,
        "conversations": turns,
        "task": "multi",
        "tasks": [q.task for q in questions],
        "scene_id": scene_id,
    }


def write_records(records: list[dict[str, Any]], path: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        return
    import datasets  # heavy; only for the Parquet option

    # datasets takes its columns from the first record, so optional fields must be present (as None) in all.
    keys = list(dict.fromkeys(k for rec in records for k in rec))
    rows = [{k: rec.get(k) for k in keys} for rec in records]
    datasets.Dataset.from_list(rows).to_parquet(str(path))


def world_tasks(config: WorldConfig) -> tuple[str, ...]:
    """The world's tasks: the standard ones, then the grounding tasks the config switches on."""
    return TASKS + tuple(t for t in GROUNDING_TASKS if int(config.questions.get(t, 0)) > 0)


def _count_questions(records: Iterable[dict[str, Any]], config: WorldConfig) -> dict[str, Any]:
    tasks = Counter(r["task"] for r in records)
    return {t: tasks.get(t, 0) for t in world_tasks(config)}


def _build_split(split: str, scenes: list[Scene], paths: WorldPaths, config: WorldConfig, progress: bool) -> dict:
    image_dir = paths.images(split)
    image_dir.mkdir(parents=True, exist_ok=True)
    names = (*RECORD_FILES, EXTRA_FILES[split])
    files: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for scene in tqdm(scenes, desc=f"world {split}", unit="img", disable=not progress):
        rendered = render_scene(scene, config)
        image = f"images/{split}/{scene.id}.png"
        rendered.image.save(paths.root / image, format="PNG")
        scene_rec = scene_record(scene, rendered.boxes_px, image, config)
        questions = questions_for(scene, rendered.boxes_px, config)
        questions += grounding_questions(scene, rendered.boxes_px, config)
        if split == "test":
            files[PARAPHRASED] += instruct_records(scene.id, image, held_out_questions(questions, scene), "p")
        else:
            phrased = rephrase_for_training(questions, scene, config.paraphrase)
            files[PHRASED] += instruct_records(scene.id, image, phrased)
        files["scenes"].append(scene_rec)
        files["captions"].append(caption_record(scene_rec, config))
        files["instruct"] += instruct_records(scene.id, image, questions)
        if questions:
            files["conversations"].append(conversation_record(scene.id, image, questions, scene.seed))
    for name, records in files.items():
        write_records(records, paths.records(split, name), paths.format)
    exist = [r for r in files["instruct"] if r["task"] == "exist"]
    return {
        "images": len(scenes),
        "records": {name: len(records) for name, records in files.items()},
        "questions": _count_questions(files["instruct"], config),
        "exist_yes": sum(r["answer"] == "Yes" for r in exist),
        "objects": sum(len(s.objects) for s in scenes),
    }


def build_world(
    config: WorldConfig,
    out_dir: str | Path,
    fmt: str = "jsonl",
    progress: bool = True,
    overwrite: bool = False,
) -> WorldPaths:
    """Render ``config``'s world into ``out_dir``; a finished world with the same config is reused as is."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown world format {fmt!r}; choose one of {list(FORMATS)}")
    paths = WorldPaths(Path(out_dir), fmt)
    if paths.world_json.exists():
        info = paths.info()
        same = info.get("config") == config.to_dict() and info.get("version") == WORLD_VERSION
        if same and info.get("format") == fmt and not overwrite:
            return paths
        if not overwrite:
            raise ConfigError(
                f"{paths.root} already holds a different shapes world; pass --overwrite or choose another --out"
            )
        # Only folders this module writes, and only because world.json proves the folder is a world.
        paths.world_json.unlink()
        for sub in ("images", *SPLITS):
            shutil.rmtree(paths.root / sub, ignore_errors=True)
    paths.root.mkdir(parents=True, exist_ok=True)
    scenes = sample_scenes(config)
    counts = {split: _build_split(split, scenes[split], paths, config, progress) for split in SPLITS}
    info = {
        "version": WORLD_VERSION,
        "format": fmt,
        "config": config.to_dict(),
        "vocab": config.vocab(),
        "tasks": list(world_tasks(config)),
        "chance": {task: chance_level(task, config) for task in TASKS},
        "counts": counts,
        "files": {
            split: {
                n: str(paths.records(split, n).relative_to(paths.root)) for n in (*RECORD_FILES, EXTRA_FILES[split])
            }
            for split in SPLITS
        },
        # No timestamps or timings: world.json is part of the world's identity (the foundation cache hashes it),
        # and the same config must give a byte-identical world.
        "software": {"vlmforge": __version__, "pillow": PIL.__version__},
    }
    paths.world_json.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return paths
