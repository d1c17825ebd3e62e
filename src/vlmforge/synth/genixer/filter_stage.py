"""Filter records by their boxes: a minimum size for every grounded record, and for REC/REG a CLIP-style cosine
between the box's crop and the expression, above a threshold given or calibrated on labeled records."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from vlmforge.data.images import load_image
from vlmforge.data.records import load_records, save_records
from vlmforge.errors import DataError
from vlmforge.manifest import file_fingerprint
from vlmforge.synth.genixer.boxfilter import ClipScorer, MinSize, calibrate_threshold, crop, expression_and_box
from vlmforge.synth.genixer.build import labeled_pairs
from vlmforge.synth.genixer.folders import image_folder_of
from vlmforge.synth.genixer.parse import ParseError, parse_output, sample_record
from vlmforge.synth.genixer.tasks import canonical_task, format_target
from vlmforge.synth.jobs import Manifest

OUTPUT = "kept.jsonl"
# A score equal to the threshold must not flip with the batch it was computed in (float rounding differs).
TOLERANCE = 1e-5


def _pairs_of(records: list[dict[str, Any]], folder: Path, where: str):
    """(crop, expression) for every REC/REG record with one box."""
    crops, texts = [], []
    for rec in records:
        found = expression_and_box(rec)
        if found is None:
            continue
        image = load_image(folder / rec["image"], f"{where}:id={rec.get('id')}")
        crops.append(crop(image, found[1]))
        texts.append(found[0])
    return crops, texts


def labeled_grounding(labeled: Path) -> list[dict[str, Any]]:
    """Labeled REC/REG records in the parsed form (canonical boxes in ``boxes``), for calibration."""
    out = []
    for rec in load_records(labeled):
        task = canonical_task(rec.get("task"))
        if task not in ("rec", "reg"):
            continue
        try:
            parsed = parse_output(format_target(labeled_pairs(rec, f"{labeled}:id={rec.get('id')}")), task)
        except (ParseError, DataError):
            continue
        out.append(sample_record(rec, parsed, {}))
    return out


def calibrate(scorer: ClipScorer, labeled: Path, recall: float, image_folder: Path) -> dict[str, Any]:
    """Threshold at ``recall`` on the labeled pairs; the same expressions paired with the next record's box are
    the negatives that report how much a wrong box still passes."""
    records = labeled_grounding(labeled)
    crops, texts = _pairs_of(records, image_folder, str(labeled))
    positive = scorer.scores(crops, texts)
    negative = scorer.scores(crops, texts[1:] + texts[:1]) if len(texts) > 1 else []
    return calibrate_threshold(positive, recall, negative)


def _filter_chunk(chunk, where, folder, min_size, scorer, threshold, kept, rejected) -> int:
    """Size filter, then one batched scoring pass over the chunk's crops; returns how many were scored."""
    passed, to_score = [], []
    for rec in chunk:
        boxes = rec.get("boxes") or []
        image = load_image(folder / rec["image"], f"{where}:id={rec.get('id')}") if boxes else None
        if image is not None and any(min_size.too_small(b, image.size) for b in boxes):
            rejected.append({"id": rec["id"], "reason": "box_too_small"})
            continue
        found = expression_and_box(rec) if scorer is not None else None
        if found is not None:
            to_score.append((len(passed), crop(image, found[1]), found[0]))
        passed.append(rec)
    cosines = scorer.scores([c for _, c, _ in to_score], [t for _, _, t in to_score]) if to_score else []
    score_of = {i: cos for (i, _, _), cos in zip(to_score, cosines, strict=True)}
    for i, rec in enumerate(passed):
        if i not in score_of:
            kept.append(rec)
        elif threshold is not None and score_of[i] < threshold - TOLERANCE:
            rejected.append({"id": rec["id"], "reason": "clip_below_threshold", "clip_score": score_of[i]})
        else:
            kept.append({**rec, "clip_score": score_of[i]})
    return len(score_of)


def filter_records(
    records: Path,
    out_dir: Path,
    *,
    min_size: MinSize,
    scorer: ClipScorer | None = None,
    threshold: float | None = None,
    calibration: dict[str, Any] | None = None,
    image_folder: Path | None = None,
    chunk_size: int = 256,
) -> dict[str, Any]:
    """Keep the records whose boxes pass into ``kept.jsonl`` (with ``clip_score`` where scored); the others go to
    ``rejected.jsonl`` with the reason. Records go through in chunks, so only one chunk's crops are in memory."""
    manifest = Manifest(out_dir, "genixer.filter")
    folder = image_folder_of(records, image_folder)
    items = load_records(records)
    threshold = calibration["threshold"] if calibration else threshold
    kept, rejected, n_scored = [], [], 0
    for start in range(0, len(items), chunk_size):
        chunk = items[start : start + chunk_size]
        n_scored += _filter_chunk(chunk, records, folder, min_size, scorer, threshold, kept, rejected)
    too_small = sum(r["reason"] == "box_too_small" for r in rejected)
    # Scored: REC/REG records that passed the size filter; the rest of those that passed had nothing to score.
    scored = {"scored": n_scored, "not_scored": len(items) - too_small - n_scored}
    save_records(kept, Path(out_dir) / OUTPUT)
    save_records(rejected, Path(out_dir) / "rejected.jsonl")
    return manifest.write(
        inputs=[file_fingerprint(records)],
        min_size={"pixels": min_size.pixels, "fraction": min_size.fraction},
        scorer=scorer.name if scorer else None,
        threshold=threshold,
        calibration=calibration,
        image_folder=str(folder),
        output=OUTPUT,
        counts={"input": len(items), "written": len(kept), "rejected": len(rejected), **scored},
        rejections=dict(Counter(r["reason"] for r in rejected)),
    )
