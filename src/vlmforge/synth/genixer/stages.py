"""The file-level stages that need no model: build the generator's data, parse its output, select for training.

Each reads records, writes its result as JSONL into its own output folder with ``manifest.json`` (inputs'
hashes, options, counts, rejections by reason) and returns the manifest.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlmforge.data.records import OnError, Rejections, load_records, read_records, save_records
from vlmforge.errors import DataError
from vlmforge.manifest import file_fingerprint
from vlmforge.synth.genixer.build import build_generator_records
from vlmforge.synth.genixer.folders import image_folder_of
from vlmforge.synth.genixer.generate import AGNOSTIC
from vlmforge.synth.genixer.parse import ParseError, parse_output, sample_record
from vlmforge.synth.genixer.select import mix, parse_band, select_band, select_random, select_top_k
from vlmforge.synth.jobs import Manifest

BUILD_OUTPUT, PARSE_OUTPUT, SELECT_OUTPUT = "generator.jsonl", "records.jsonl", "train.jsonl"


def build_stage(
    labeled: Path, out_dir: Path, *, on_error: OnError = "raise", image_folder: Path | None = None, **options: Any
) -> dict[str, Any]:
    """Labeled records -> ``generator.jsonl``: the generator's training records (``options``: seed, mode,
    agnostic_share)."""
    manifest = Manifest(out_dir, "genixer.build")
    rejections = Rejections()
    located = read_records(labeled, on_error=on_error, rejections=rejections)
    records, other = build_generator_records(
        located, on_error=on_error, rejections=rejections, image_folder=image_folder, **options
    )
    save_records(records, Path(out_dir) / BUILD_OUTPUT)
    return manifest.write(
        inputs=[file_fingerprint(labeled)],
        options={**options, "on_error": on_error, "image_folder": image_folder},
        output=BUILD_OUTPUT,
        counts={"input": len(located) + rejections.total, "written": len(records), "other_tasks": other},
        rejections=rejections.as_dict(),
        tasks=dict(Counter(r["task"] for r in records)),
        task_specific=sum(r["provenance"]["task_specific"] for r in records),
    )


def _generated(paths: Sequence[Path]) -> tuple[list[dict[str, Any]], int]:
    from vlmforge.data.records import iter_jsonl_objects

    seen, out, duplicates = set(), [], 0
    for path in paths:
        for where, rec in iter_jsonl_objects(path):
            if "id" not in rec or "output" not in rec or "image" not in rec:
                raise DataError(where, "a generated record needs 'id', 'image' and 'output'", "bad_record")
            if rec["id"] in seen:
                duplicates += 1  # counted in the manifest: overlapping shards given twice
                continue
            seen.add(rec["id"])
            out.append(rec)
    return out, duplicates


def parse_stage(generated: Sequence[Path], out_dir: Path) -> dict[str, Any]:
    """Generated text -> ``records.jsonl`` (training records) and ``rejected.jsonl`` (id, task, reason, output):
    every output lands in exactly one of the two."""
    manifest = Manifest(out_dir, "genixer.parse")
    items, duplicates = _generated(generated)
    kept, rejected = [], []
    per_task: dict[str, Counter] = defaultdict(Counter)
    for rec in items:
        asked = rec.get("task") or AGNOSTIC
        try:
            parsed = parse_output(rec["output"], None if asked == AGNOSTIC else asked)
        except ParseError as err:
            rejected.append(
                {"id": rec["id"], "task": asked, "reason": err.reason, "detail": str(err), "output": rec["output"]}
            )
            per_task[asked][f"rejected:{err.reason}"] += 1
            continue
        prov = {**(rec.get("provenance") or {}), "stage": "genixer.parse", "asked_task": asked}
        prov["instruction"] = rec.get("instruction")
        kept.append(sample_record(rec, parsed, prov))
        per_task[asked]["accepted"] += 1
    save_records(kept, Path(out_dir) / PARSE_OUTPUT)
    save_records(rejected, Path(out_dir) / "rejected.jsonl")
    folders = {str(image_folder_of(p)) for p in generated}
    return manifest.write(
        inputs=[file_fingerprint(p) for p in generated],
        image_folder=folders.pop() if len(folders) == 1 else None,  # shards of one folder agree
        output=PARSE_OUTPUT,
        counts={"input": len(items), "written": len(kept), "rejected": len(rejected), "duplicate_ids": duplicates},
        rejections=dict(Counter(r["reason"] for r in rejected)),
        per_asked_task={task: dict(c) for task, c in sorted(per_task.items())},
        tasks=dict(Counter(r["task"] for r in kept)),
    )


def select_stage(
    records: Path,
    out_dir: Path,
    *,
    band: str | None = None,
    top_k: int | None = None,
    random_n: int | None = None,
    n: int | None = None,
    labeled: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Judged records -> ``train.jsonl``: the chosen ones after the labeled ones, each with its provenance."""
    manifest = Manifest(out_dir, "genixer.select")
    judged = load_records(records)
    if band is not None:
        lo, hi = parse_band(band)
        chosen, rule = select_band(judged, lo, hi, n=n, seed=seed), f"band {lo}:{hi}"
    elif top_k is not None:
        chosen, rule = select_top_k(judged, top_k), f"top {top_k}"
    else:
        chosen, rule = select_random(judged, random_n if random_n is not None else len(judged), seed=seed), "random"
    base = load_records(labeled) if labeled else []
    out = mix(chosen, base, rule)
    save_records(out, Path(out_dir) / SELECT_OUTPUT)
    scores = [r["score"] for r in chosen if isinstance(r.get("score"), int | float)]
    return manifest.write(
        inputs=[file_fingerprint(p) for p in (records, labeled) if p],
        rule=rule,
        seed=seed,
        output=SELECT_OUTPUT,
        counts={"judged": len(judged), "selected": len(chosen), "labeled": len(base), "written": len(out)},
        tasks=dict(Counter(r.get("task", "?") for r in chosen)),
        score_mean=sum(scores) / len(scores) if scores else None,
    )
