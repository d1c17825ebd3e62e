"""The pool's synthetic samples: generate, parse, judge, check against the world, box-filter -- with the core's
stages (``synth/genixer``), each resumable or cheap to redo -- and the per-task measures of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmforge.data.records import load_records, save_records
from vlmforge.shapes.lab.genixer_metrics import auroc, task_table
from vlmforge.synth.genixer.tasks import TASKS


def _generate_parse_judge(root: Path, data: Path, generator: Path, judge: Path, settings: Any, clock: Any) -> dict:
    from vlmforge.shapes.lab.freshness import run_fresh
    from vlmforge.synth.genixer.backends import LocalVisionGenerator
    from vlmforge.synth.genixer.generate import generate_folder
    from vlmforge.synth.genixer.judge_stage import judge_records
    from vlmforge.synth.genixer.judges import LocalJudge
    from vlmforge.synth.genixer.stages import parse_stage

    # Generation and judging resume what a folder holds; made by another generator or judge (retrained into the
    # same folder), it is set aside and done again rather than refused.
    backend = LocalVisionGenerator(str(generator), batch_size=settings.batch_size)
    clock.run("generate", lambda: run_fresh(root.parent, root / "generate", {}, lambda: generate_folder(
        data / "pool", root / "generate", backend, tasks=TASKS, batch_size=settings.batch_size,
        max_new_tokens=settings.max_new_tokens)))  # fmt: skip
    parsed = clock.run("parse", lambda: parse_stage([root / "generate/generated.jsonl"], root / "parse"))
    scorer = LocalJudge(str(judge), batch_size=settings.batch_size)
    clock.run("judge", lambda: run_fresh(root.parent, root / "judge", {}, lambda: judge_records(
        root / "parse/records.jsonl", root / "judge", scorer, batch_size=settings.batch_size)))  # fmt: skip
    return parsed


def _box_filter(root: Path, data: Path, foundation: Path, settings: Any) -> dict[str, Any]:
    from vlmforge.shapes.lab.genixer_scorer import FoundationScorer
    from vlmforge.synth.genixer.boxfilter import MinSize
    from vlmforge.synth.genixer.filter_stage import calibrate, filter_records

    scorer = FoundationScorer(foundation / "vision")
    calibration = calibrate(scorer, data / "L/instruct.jsonl", settings.recall, data)
    return filter_records(
        root / "judge/judged.jsonl", root / "filter", min_size=MinSize(fraction=settings.min_box), scorer=scorer,
        calibration=calibration, image_folder=data / "pool",
    )  # fmt: skip


def make_synthetic(
    root: Path, data: Path, generator: Path, judge: Path, foundation: Path, world: Path, pool: dict, settings, clock
) -> dict[str, Any]:
    """Write OUT/genixer/synthetic*.jsonl (every judged sample with ``correct``; the box-filtered ones; the correct
    ones), image paths under ``data/``; returns their paths and the per-task results."""
    from vlmforge.shapes.lab.genixer_data import truths

    parsed = _generate_parse_judge(root, data, generator, judge, settings, clock)
    truth = truths(pool["scenes"], world)
    judged, scored = [], root / "judge/judged.jsonl"
    for rec in load_records(scored):  # the judge stage always leaves its file, empty when nothing parsed
        turns = rec["conversations"]
        pairs = [(h["value"], g["value"]) for h, g in zip(turns[::2], turns[1::2], strict=False)]
        judged.append({**rec, "image": f"pool/{rec['image']}", "correct": truth[Path(rec["image"]).name].check(pairs)})
    filtered = clock.run("box filter", lambda: _box_filter(root, data, foundation, settings))
    kept = {r["id"] for r in load_records(root / "filter/kept.jsonl")}
    paths = {name: root / f"synthetic{suffix}.jsonl" for name, suffix in
             (("all", ""), ("filtered", "_boxfiltered"), ("correct", "_correct"))}  # fmt: skip
    save_records(judged, paths["all"])
    save_records([r for r in judged if r["id"] in kept], paths["filtered"])
    save_records([r for r in judged if r["correct"]], paths["correct"])
    table = task_table(parsed["per_asked_task"], judged, kept)
    outputs = parsed["counts"]["input"]
    overall = {
        "outputs": outputs,
        "parsed": len(judged),
        "rejection_rate": 1 - len(judged) / outputs if outputs else None,
        "correct": sum(r["correct"] for r in judged) / len(judged) if judged else None,
        "auroc": auroc([r["score"] for r in judged], [r["correct"] for r in judged]),
        "rejections": parsed["rejections"],
    }
    box = {k: filtered[k] for k in ("threshold", "calibration", "counts", "rejections", "scorer")}
    return {"paths": paths, "results": {"tasks": table, "overall": overall, "box_filter": box}}
