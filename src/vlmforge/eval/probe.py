"""The readout ceiling: how well a linear probe reads each question kind's answer off the frozen vision features.

For each question kind (vlmforge.data.kinds) a linear probe maps the pooled vision features of an image
(vlmforge.eval.vision_features: the layer and tokens the VLM's projector receives) to the kind's answer, trained
on the training records and scored on the held-out ones. What a linear readout finds in the features is what the
VLM's projector and LM can be expected to get out, so the VLM's accuracy on a kind is reported as a fraction of
the probe's.

A probe reads one answer per image, so it applies only to kinds whose answer depends on the image alone: every
image has one answer for the kind (one question per kind, or several wordings of it). It does not apply when an
image has different answers to different questions of one kind, when every answer is the same, or when answers
are free text rather than a set of classes; the result says which.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vlmforge.data.kinds import first_question, kind_of, reference_answer
from vlmforge.data.validate import record_images
from vlmforge.eval.linear_probe import fit_linear_probe, predict

if TYPE_CHECKING:  # the module that defines it imports transformers, which this one loads only when it probes
    from vlmforge.models.assemble import FeatureLayer

FREE_TEXT_SHARE = 0.5  # more distinct answers than this share of the records (and over MIN_FREE_TEXT): free text
MIN_FREE_TEXT = 20
RATIO_TARGET = 0.9  # the VLM should reach this fraction of the ceiling


def normalise_answer(answer: str) -> str:
    return answer.strip().rstrip(".").strip().casefold()


def probe_rows(records: Sequence[dict], field: str) -> list[tuple[str, str, str, str]]:
    """(image, kind, question, answer) for every single-image record that has a kind."""
    rows = []
    for record in records:
        images, kind = record_images(record), kind_of(record, field)
        if len(images) == 1 and kind is not None:
            rows.append((images[0], kind, first_question(record), normalise_answer(reference_answer(record))))
    return rows


def why_not_applicable(rows: Sequence[tuple[str, str, str, str]]) -> str:
    """Why a probe cannot stand for a kind's ceiling ('' when it can), from the kind's training rows."""
    answers = Counter(answer for *_, answer in rows)
    if len(answers) < 2:
        return f"every training answer is {next(iter(answers), '')!r}: there is nothing to read from the image"
    per_image: dict[str, set[str]] = defaultdict(set)
    for image, _, _, answer in rows:
        per_image[image].add(answer)
    conflicting = sum(len(found) > 1 for found in per_image.values())
    if conflicting:
        questions = len({question for _, _, question, _ in rows})
        return (
            f"{conflicting} of {len(per_image)} images have different answers to different questions of this kind "
            f"({questions} question texts): the answer depends on the question, not on the image alone"
        )
    if len(answers) > max(MIN_FREE_TEXT, FREE_TEXT_SHARE * len(rows)):
        return f"{len(answers)} distinct answers in {len(rows)} records: free text, not classes a probe can pick from"
    return ""


def _standardise(train: torch.Tensor, heldout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = train.mean(0), train.std(0).clamp(min=1e-6)
    return (train - mean) / std, (heldout - mean) / std


def probe_kind(train_rows, held_rows, train_x: torch.Tensor, held_x: torch.Tensor, seed: int = 0) -> dict[str, Any]:
    """Fit the probe on one kind's training rows and score it on its held-out rows; an answer never seen in
    training counts as wrong."""
    classes = sorted({answer for *_, answer in train_rows})
    index = {answer: i for i, answer in enumerate(classes)}
    y = torch.tensor([index[answer] for *_, answer in train_rows])
    truth = torch.tensor([index.get(answer, -100) for *_, answer in held_rows])
    x, hx = _standardise(train_x.float(), held_x.float())
    predicted = predict(fit_linear_probe(x, y, multilabel=False, seed=seed), hx, multilabel=False)
    majority = Counter(answer for *_, answer in train_rows).most_common(1)[0][0]
    return {
        "applies": True,
        "probe_accuracy": float((predicted == truth).float().mean()),
        "majority_accuracy": sum(answer == majority for *_, answer in held_rows) / len(held_rows),
        "classes": len(classes),
        "train": len(train_rows),
        "heldout": len(held_rows),
    }


def readout_ceiling(
    train_rows: Sequence[tuple[str, str, str, str]],
    held_rows: Sequence[tuple[str, str, str, str]],
    features: Mapping[str, torch.Tensor],
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Per kind: the probe's held-out accuracy, the majority baseline and the sizes, or why it does not apply.
    ``features`` maps an image path (as in the rows) to its pooled feature vector."""
    by_kind: dict[str, list] = defaultdict(list)
    held_by_kind: dict[str, list] = defaultdict(list)
    for row in train_rows:
        by_kind[row[1]].append(row)
    for row in held_rows:
        held_by_kind[row[1]].append(row)
    out: dict[str, dict[str, Any]] = {}
    for kind in sorted(set(by_kind) | set(held_by_kind)):
        train, held = by_kind.get(kind, []), held_by_kind.get(kind, [])
        reason = why_not_applicable(train) if train else "no training records of this kind"
        if not reason and not held:
            reason = "no held-out records of this kind"
        if reason:
            out[kind] = {"applies": False, "reason": reason, "train": len(train), "heldout": len(held)}
            continue
        train_x = torch.stack([features[image] for image, *_ in train])
        held_x = torch.stack([features[image] for image, *_ in held])
        out[kind] = probe_kind(train, held, train_x, held_x, seed=seed)
    return out


def vlm_accuracy(results: Mapping[str, Any], field: str, kind: str, task: str = "jsonl") -> float | None:
    """The VLM's accuracy on one kind from an evaluation's results (``vlmforge eval --group-by FIELD``)."""
    scored = results.get("tasks", {}).get(task)
    if not scored:
        return None
    value = scored["metrics"].get(f"{field}={kind}/{scored['primary']}")
    value = value.get("value") if isinstance(value, Mapping) else value
    return None if value is None else float(value)


def with_vlm(ceiling: Mapping[str, dict], results: Mapping[str, Any] | None, field: str) -> dict[str, dict]:
    """The ceiling with the VLM's accuracy per kind and its ratio to the probe's (where both exist)."""
    out = {}
    for kind, entry in ceiling.items():
        entry = dict(entry)
        vlm = vlm_accuracy(results, field, kind) if results else None
        if vlm is not None:
            entry["vlm_accuracy"] = vlm
            if entry.get("applies") and entry["probe_accuracy"] > 0:
                entry["ratio"] = vlm / entry["probe_accuracy"]
        out[kind] = entry
    return out


def report_lines(ceiling: Mapping[str, dict], field: str) -> list[str]:
    """A table per kind: VLM accuracy, probe ceiling, their ratio, majority baseline; then why a probe does not
    apply to the kinds it skipped."""

    def fmt(value: Any, spec: str = ".3f") -> str:
        return "-" if value is None else format(value, spec)

    lines = [f"| {field} | VLM | probe ceiling | VLM / ceiling | majority | train | held-out |", "|---" * 7 + "|"]
    for kind, e in ceiling.items():
        ratio = fmt(e.get("ratio"), ".2f") + (" (below 0.9)" if e.get("ratio", 1.0) < RATIO_TARGET else "")
        lines.append(f"| {kind} | {fmt(e.get('vlm_accuracy'))} | {fmt(e.get('probe_accuracy'))} | {ratio} | "
                     f"{fmt(e.get('majority_accuracy'))} | {e['train']} | {e['heldout']} |")  # fmt: skip
    lines += [f"probe does not apply to {field}={kind}: {e['reason']}" for kind, e in ceiling.items() if "reason" in e]
    return lines


def run_probe(
    train: Sequence[dict],
    heldout: Sequence[dict],
    image_folder: str | Path,
    vision_model: str,
    field: str,
    *,
    layer: FeatureLayer = -2,
    strategy: str | None = None,
    cache: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The readout ceiling of ``vision_model`` for the records' kinds under ``field``: ``{"field", "features"
    (which tower, layer, tokens, pooling), "kinds": {kind: ...}}``."""
    from vlmforge.eval.vision_features import cached_features

    train_rows, held_rows = probe_rows(train, field), probe_rows(heldout, field)
    images = sorted({image for image, *_ in [*train_rows, *held_rows]})
    vectors, about = cached_features(vision_model, [Path(image_folder) / i for i in images], layer, strategy, cache)
    features = dict(zip(images, vectors, strict=True))
    return {"field": field, "features": about, "kinds": readout_ceiling(train_rows, held_rows, features, seed)}
