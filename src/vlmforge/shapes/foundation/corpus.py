"""Read what the foundation models learn from out of a shapes-world folder.

Only this module knows the world's layout (``world.json``; ``{split}/captions.jsonl``, ``instruct.jsonl``,
``conversations.jsonl``, ``scenes.jsonl``; image paths relative to the world folder). The trainers take plain lists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from vlmforge.data.records import iter_jsonl_objects
from vlmforge.errors import DataError
from vlmforge.models.assemble import IMAGE_TOKEN

RECORD_FILES = ("captions.jsonl", "instruct.jsonl", "conversations.jsonl")
# The single questions: each in its type's template, and again with a share in other phrasings (world/build.py).
TEMPLATED, PHRASED = "instruct.jsonl", "instruct_phrased.jsonl"
ROLES = {"human": "user", "gpt": "assistant"}


@dataclass
class WorldText:
    """One split of a world: image paths with their two captions, and every conversation (as chat messages)."""

    image_paths: list[Path] = field(default_factory=list)
    scene_ids: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    detailed: list[str] = field(default_factory=list)
    conversations: list[list[dict[str, str]]] = field(default_factory=list)
    # The same conversations with the image replaced by the scene's detailed description: reading comprehension.
    grounded: list[list[dict[str, str]]] = field(default_factory=list)
    # Per captioned image, its objects as (normalised box, phrase such as "a small red circle").
    regions: list[list[tuple[list[float], str]]] = field(default_factory=list)


def read_jsonl(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """Records of a JSONL file, each with its ``file:line`` location for error messages. Blank lines are skipped."""
    if not path.is_file():
        raise DataError(str(path), "file not found: is this a shapes-world folder (vlmforge world)?", "missing")
    return list(iter_jsonl_objects(path))


def to_messages(record: dict[str, Any], where: str) -> list[dict[str, str]]:
    """LLaVA turns -> chat messages, with the ``<image>`` placeholder removed (the LM learns text only)."""
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise DataError(where, "'conversations' must be a non-empty list of turns", "conversations")
    messages = []
    for turn in turns:
        role = ROLES.get(turn.get("from")) if isinstance(turn, dict) else None
        value = turn.get("value") if isinstance(turn, dict) else None
        if role is None or not isinstance(value, str):
            raise DataError(where, f"bad turn {turn!r}: need 'from' in human/gpt and a string 'value'", "turn")
        messages.append({"role": role, "content": value.replace(IMAGE_TOKEN, "").strip()})
    return messages


def _text_field(record: dict[str, Any], key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(where, f"missing or empty '{key}'", key)
    return value


def read_world(world_dir: str | Path, split: str = "train") -> WorldText:
    """Captions, detailed captions, image paths and conversations of one split of a world folder."""
    root = Path(world_dir)
    if not (root / "world.json").is_file():
        raise DataError(str(root / "world.json"), "not found: is this a shapes-world folder?", "missing")
    out = WorldText()
    described: dict[str, str] = {}
    for name in RECORD_FILES:
        for where, record in read_jsonl(root / split / name):
            out.conversations.append(to_messages(record, where))
            description = described.get(record.get("image", ""))
            if description and name != "captions.jsonl":
                out.grounded.append(to_messages(_describe_image(record, description), where))
            if name != "captions.jsonl":
                continue
            image = root / _text_field(record, "image", where)
            if not image.is_file():
                raise DataError(where, f"image '{image}' not found", "image")
            detailed = _text_field(record, "detailed_caption", where)
            out.image_paths.append(image)
            out.scene_ids.append(str(record.get("scene_id", record.get("id"))))
            described[record["image"]] = detailed
            out.captions.append(_text_field(record, "caption", where))
            out.detailed.append(detailed)
    if not out.image_paths:
        raise DataError(str(root / split / "captions.jsonl"), "no captioned images", "empty")
    out.regions = _read_regions(root, split, out.scene_ids)
    return out


def read_scenes(world_dir: str | Path, split: str, required: tuple[str, ...] = ("shape",)) -> dict[str, list[dict]]:
    """``scene id -> its objects`` from the split's exact scene annotations (``scenes.jsonl``). A scene without
    ``id`` or an ``objects`` list, or an object without one of the ``required`` fields, is a DataError naming
    file:line."""
    scenes: dict[str, list[dict]] = {}
    for where, scene in read_jsonl(Path(world_dir) / split / "scenes.jsonl"):
        objects = scene.get("objects")
        if (
            "id" not in scene
            or not isinstance(objects, list)
            or not all(isinstance(o, dict) and all(k in o for k in required) for o in objects)
        ):
            needs = " and ".join(repr(k) for k in required)
            raise DataError(where, f"a scene needs 'id' and 'objects', each object with {needs}", "scene")
        scenes[str(scene["id"])] = objects
    return scenes


def _read_regions(root: Path, split: str, scene_ids: list[str]) -> list[list[tuple[list[float], str]]]:
    """The objects of each captioned scene, in caption order, as (box, phrase such as "a small red circle")."""
    scenes = read_scenes(root, split, required=("box", "shape"))
    missing = [sid for sid in scene_ids if sid not in scenes]
    if missing:
        raise DataError(str(root / split / "scenes.jsonl"), f"no scene for captioned image(s) {missing[:3]}", "scene")
    return [
        [
            (list(o["box"]), " ".join(["a", *(o[k] for k in ("size", "color") if k in o), o["shape"]]))
            for o in scenes[sid]
        ]
        for sid in scene_ids
    ]


def _describe_image(record: dict[str, Any], description: str) -> dict[str, Any]:
    """The record with its ``<image>`` replaced by a text description of the same scene."""
    turns = [dict(turn) for turn in record["conversations"]]
    turns[0]["value"] = turns[0]["value"].replace(IMAGE_TOKEN, description, 1)
    return {**record, "conversations": turns}


def tokenizer_texts(world: WorldText) -> list[str]:
    """Plain text the tokenizer learns merges from (special tokens are added separately)."""
    turns = [m["content"] for conv in world.conversations for m in conv]
    return world.captions + world.detailed + turns


def lm_texts(world: WorldText, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """LM pretraining documents: every caption, and every conversation rendered through the chat template, once
    as asked (the question alone) and once grounded (the scene's description where the image was).

    The grounded copies teach the LM to answer from what precedes the question. A real LM (Qwen, Phi) brings that
    skill from pretraining; without it, a tiny LM answers from priors and LLaVA training cannot teach it to look
    at the image tokens in minutes.
    """
    chats = tokenizer.apply_chat_template(world.conversations + world.grounded, tokenize=False)
    return world.captions + world.detailed + list(chats)


def scene_lookup(world_dir: str | Path, image_paths: Sequence[Path], split: str) -> Callable[[dict, str], int]:
    """``scene_of(record, where)``: the index in ``image_paths`` (the split's captioned images, in ``read_world``
    order) of the image ``record`` names; a record about any other image is a DataError naming ``where``."""
    root = Path(world_dir)
    index = {Path(path).resolve(): i for i, path in enumerate(image_paths)}

    def scene_of(record: dict, where: str) -> int:
        scene = index.get((root / str(record.get("image"))).resolve())
        if scene is None:
            raise DataError(where, f"image {record.get('image')!r} is not a captioned {split} image", "image")
        return scene

    return scene_of


# Question types whose answer is one exact string (multiple choice is scored circularly, boxes by IoU).
EXACT_MATCH_TASKS = ("color", "shape", "count", "position", "exist")


def has_questions(world_dir: str | Path, split: str) -> bool:
    """Whether ``split`` has the captions and single-question records that question readers need."""
    folder = Path(world_dir) / split
    return (folder / "captions.jsonl").is_file() and (folder / "instruct.jsonl").is_file()


def iter_questions(
    world_dir: str | Path, split: str, tasks: tuple[str, ...] = EXACT_MATCH_TASKS
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(file:line, record)`` of the split's single-question records (``instruct.jsonl``) of ``tasks`` that carry
    a string ``answer``."""
    for where, record in read_jsonl(Path(world_dir) / split / "instruct.jsonl"):
        if record.get("task") in tasks and isinstance(record.get("answer"), str):
            yield where, record


@dataclass
class GroundedQuestion:
    """One test question with the scene's description in place of the image, and its exact answer."""

    task: str
    messages: list[dict[str, str]]
    answer: str


def grounded_questions(
    world_dir: str | Path,
    split: str = "test",
    tasks: tuple[str, ...] = EXACT_MATCH_TASKS,
    limit: int | None = None,
) -> list[GroundedQuestion]:
    """The split's single-question records of ``tasks``, with each ``<image>`` replaced by the scene's detailed
    description: the LM's reading-comprehension test."""
    described = {
        _text_field(record, "image", where): _text_field(record, "detailed_caption", where)
        for where, record in read_jsonl(Path(world_dir) / split / "captions.jsonl")
    }
    out = []
    for where, record in iter_questions(world_dir, split, tasks):
        if record.get("image") not in described:
            continue
        grounded = _describe_image(record, described[record["image"]])
        out.append(GroundedQuestion(record["task"], to_messages(grounded, where)[:1], record["answer"]))
        if limit is not None and len(out) >= limit:
            break
    return out
