"""The Genixer lab's measures: how true the generated samples are, how well the judge ranks them, what the box
filter keeps, and mean ± standard error over seeds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vlmforge.shapes.lab.recipe_runs import mean_and_se
from vlmforge.synth.genixer.select import in_band

# The paper's bands of judge probability; "medium" is the one it reports helps most.
BANDS = {"low": (0.0, 0.5), "medium": (0.5, 0.7), "high": (0.7, 1.0)}


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Area under the ROC curve: the chance that a correct sample scores above a wrong one (ties count half).
    Hand-written because scikit-learn is no dependency, and the rank formula is a few lines. None when one class
    is missing."""
    pos = sum(bool(x) for x in labels)
    neg = len(labels) - pos
    if not pos or not neg:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):  # average ranks over ties
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, y in zip(ranks, labels, strict=True) if y)
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def band_of(score: float) -> str:
    return next(name for name, (lo, hi) in BANDS.items() if in_band(score, lo, hi))


def mean_se(values: Sequence[float]) -> dict[str, Any]:
    """Mean, its standard error (None for one value) and the values."""
    mean, se = mean_and_se(values)
    return {"mean": mean, "se": se, "values": list(values)}


def _share(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def task_table(
    asked: dict[str, dict[str, int]],
    judged: Sequence[dict[str, Any]],
    kept_ids: set[str] | None,
) -> dict[str, dict[str, Any]]:
    """Per asked task: outputs, parse rejection rate, correctness of the parsed samples, the judge's AUROC,
    correctness and count per band, and for REC/REG the box filter's precision and retention.

    ``asked``: the parse manifest's ``per_asked_task``; ``judged``: the parsed records with ``correct``,
    ``score`` and ``provenance.asked_task``; ``kept_ids``: the ids the box filter kept (None: no filter ran)."""
    table = {}
    for task, counts in asked.items():
        rows = [r for r in judged if r["provenance"].get("asked_task") == task]
        outputs = sum(counts.values())
        correct = [r["correct"] for r in rows]
        entry: dict[str, Any] = {
            "outputs": outputs,
            "parsed": len(rows),
            "rejection_rate": 1 - counts.get("accepted", 0) / outputs if outputs else None,
            "correct": _share(correct),
            "auroc": auroc([r["score"] for r in rows], correct),
            "bands": {
                band: {"n": len(inside), "correct": _share([r["correct"] for r in inside])}
                for band in BANDS
                for inside in [[r for r in rows if band_of(r["score"]) == band]]
            },
        }
        if kept_ids is not None and task in ("rec", "reg"):
            kept = [r["correct"] for r in rows if r["id"] in kept_ids]
            entry["box_filter"] = {
                "precision_before": _share(correct),
                "precision_after": _share(kept),
                "retention": len(kept) / len(rows) if rows else None,
                "correct_kept": sum(kept) / sum(correct) if sum(correct) else None,
            }
        table[task] = entry
    return table
