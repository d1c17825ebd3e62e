"""Run the generator over a folder of unlabeled images: batched, sharded, resumable after ``kill -9``.

Each image gets ``per_image`` requests per task (task-specific) or ``per_image`` requests with no task sentence
(task-agnostic). A request's id names its image, task and number, so a rerun skips exactly the requests already on
disk (``synth/runner.py``); the raw text is kept and parsed by a later stage, so a parser change never costs a
regeneration.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlmforge.data.images import load_image
from vlmforge.errors import ConfigError, DataError
from vlmforge.manifest import file_fingerprint
from vlmforge.synth.backends import GenerationFailure
from vlmforge.synth.genixer.backends import VisionGenerator, model_identity
from vlmforge.synth.genixer.folders import guard_resume
from vlmforge.synth.genixer.tasks import TASKS
from vlmforge.synth.genixer.templates import draw_instruction
from vlmforge.synth.jobs import Manifest
from vlmforge.synth.runner import BatchOutcome, run_stage

OUTPUT = "generated.jsonl"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
AGNOSTIC = "any"  # the task field of a task-agnostic request: the generator chooses


def list_images(folder: Path) -> list[str]:
    """Image paths relative to ``folder``, sorted, so every process and every rerun sees the same order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--images {folder}: not a folder")
    found = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise ConfigError(f"--images {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def parse_shard(text: str) -> tuple[int, int]:
    """``I/N`` -> (I, N): this process takes every N-th request starting at I."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if not 0 <= index < count:
        raise ConfigError(f"--shard {text!r}: need 0 <= I < N")
    return index, count


def plan_requests(
    images: Sequence[str],
    tasks: Sequence[str] | None,
    *,
    per_image: int = 1,
    seed: int = 0,
    shard: tuple[int, int] = (0, 1),
    batch_size: int = 1,
) -> list[dict[str, Any]]:
    """One request per (image, task, k); ``tasks=None`` is task-agnostic.

    Requests come in windows of images, one task after another within a window, so that each of a shard's
    batches of ``batch_size`` asks one task: a batch decodes until its longest output ends, and one task's
    outputs are of similar length (a short VQA answer no longer waits for a dialogue).
    """
    unknown = sorted(set(tasks or ()) - set(TASKS))
    if unknown:
        raise ConfigError(f"unknown Genixer tasks {unknown}; known: {', '.join(TASKS)}")
    window = max(1, -(-batch_size * shard[1] // per_image))  # a shard takes every shard[1]-th request
    out = []
    for first in range(0, len(images), window):
        for task in tasks or (AGNOSTIC,):
            for image in images[first : first + window]:
                for k in range(per_image):
                    rid = f"{image}#{task}#{k}"
                    instruction, index, _ = draw_instruction(None if task == AGNOSTIC else task, rid, seed=seed)
                    out.append({"id": rid, "image": image, "task": task, "instruction": instruction, "template": index})
    return out[shard[0] :: shard[1]]


def generate_folder(
    images: Path,
    out_dir: Path,
    generator: VisionGenerator,
    *,
    tasks: Sequence[str] | None = None,
    per_image: int = 1,
    shard: tuple[int, int] = (0, 1),
    batch_size: int = 8,
    max_new_tokens: int = 1024,
    temperature: float = 0.2,
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``out_dir/generated.jsonl`` (``{"id", "image", "task", "instruction", "output", "provenance"}``) and
    return the manifest. Unreadable images are rejected by reason; failed requests stay pending for a rerun."""
    images, out_dir = Path(images), Path(out_dir)
    manifest = Manifest(out_dir, "genixer.generate")
    requests = plan_requests(
        list_images(images), tasks, per_image=per_image, seed=seed, shard=shard, batch_size=batch_size
    )
    settings = {"max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed}
    guard_resume(
        out_dir,
        {"images": file_fingerprint(images), "tasks": list(tasks or [AGNOSTIC]), "per_image": per_image,
         "shard": list(shard), "backend": generator.name, "model": model_identity(generator), **settings},
    )  # fmt: skip

    def process(batch: list[dict[str, Any]]) -> BatchOutcome:
        outcome, ready, pictures, decoded = BatchOutcome(), [], [], {}
        for req in batch:
            try:
                # One decode per image, however many tasks ask about it in this batch.
                if req["image"] not in decoded:
                    decoded[req["image"]] = load_image(images / req["image"], f"{images / req['image']}")
                pictures.append(decoded[req["image"]])
                ready.append(req)
            except DataError as err:
                outcome.rejected.append((req["id"], err.code))
        texts = generator.generate(
            [(pic, req["instruction"]) for pic, req in zip(pictures, ready, strict=True)], **settings
        )
        for req, text in zip(ready, texts, strict=True):
            if isinstance(text, GenerationFailure):
                outcome.failed[f"generation_failed:{text.reason}"] += 1
                continue
            prov = {"stage": "genixer.generate", "backend": generator.name, **settings}
            outcome.accepted.append({**req, "output": text, "provenance": prov})
        return outcome

    result = run_stage(requests, out_dir, OUTPUT, process, batch_size=batch_size, desc="generate")
    return manifest.write(
        backend=generator.name,
        generation=settings,
        image_folder=str(images),
        asked_tasks=list(tasks) if tasks else AGNOSTIC,
        per_image=per_image,
        shard=f"{shard[0]}/{shard[1]}",
        inputs=[file_fingerprint(images)],
        output=OUTPUT,
        **result,
    )
