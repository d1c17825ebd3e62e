"""Cross-modal transfer probe: does what is learnt from (transferred) caption embeddings hold on real images?

Unicorn's claim, stripped of the language model: a classifier trained only on text-side vectors should work on
image-side vectors once the modality gap is closed. For each source the lab trains on (the image-trained control's
real image embeddings, or the caption embeddings after transfer ``none`` / ``mean_shift`` / ``c3``), a linear
probe learns per-image attributes from the *train* vectors and is scored on the real *test* images, encoded
exactly as the embedding-input VLM sees them at inference (normalised; centred for ``mean_shift`` / ``c3``).
This is the cross-modal evaluation of the C3 paper, and it measures what the pooled vector carries independently
of whether a tiny LM learns to read it in the lab's budget.

Attributes come from the world's exact scene annotations: the number of objects (one class per count, scored by
accuracy) and which colours, shapes, colour-shape pairs ("is there a red star?", the binding an existence
question needs) and positions (grid cells, when annotated) are present: one yes/no label per value, scored by
balanced accuracy (the mean of the true-positive and true-negative rates, averaged over labels), so answering
"absent" everywhere scores 0.5 however rare a value is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vlmforge.errors import DataError
from vlmforge.eval.linear_probe import fit_linear_probe, predict

ATTRIBUTES = ("count", "colors", "shapes", "objects", "positions")
MULTICLASS = ("count",)  # one class per image; every other attribute is a set of yes/no labels
SCENE_FIELDS = ("color", "shape")  # what every annotated object must have for these labels
_VALUE = {  # attribute -> the value one object contributes (None: not annotated)
    "colors": lambda o: o.get("color"),
    "shapes": lambda o: o.get("shape"),
    "objects": lambda o: f"{o['color']} {o['shape']}",
    "positions": lambda o: o.get("position"),
}
BOOTSTRAP = 200  # resamples of the test images for standard errors
CARRIED_MARGIN = 0.05  # "carried": the image-trained probe beats the majority baseline by at least this much


@dataclass
class SceneLabels:
    """Per-scene attribute targets: ``count`` [N] class indices; the others [N, V] multi-hot (V = 0 when the scenes
    do not annotate that attribute)."""

    ids: list[str]
    count: torch.Tensor
    colors: torch.Tensor
    shapes: torch.Tensor
    objects: torch.Tensor
    positions: torch.Tensor


def scene_labels(
    scenes: Mapping[str, list[dict[str, Any]]], ids: Sequence[str], vocab: Mapping[str, Sequence[Any]]
) -> SceneLabels:
    """Targets for ``ids`` (``scenes``: ``vlmforge.shapes.foundation.corpus.read_scenes``) over a fixed
    vocabulary (``vocab[attribute]``, taken from the train scenes, so a test value never seen in training is simply
    never predicted)."""
    missing = [i for i in ids if i not in scenes]
    if missing:
        raise DataError("scenes.jsonl", f"no scene annotation for {missing[:3]}", "scene")
    count = torch.tensor([_index(vocab["count"], len(scenes[i])) for i in ids])
    present = {
        attr: torch.tensor([[float(v in {value(o) for o in scenes[i]}) for v in vocab[attr]] for i in ids]).reshape(
            len(ids), len(vocab[attr])
        )
        for attr, value in _VALUE.items()
    }
    return SceneLabels(list(ids), count, **present)


def _index(values: Sequence[Any], value: Any) -> int:
    return values.index(value) if value in values else -100  # -100: ignored by cross_entropy, scored as wrong


def label_vocabulary(scenes: Mapping[str, list[dict[str, Any]]]) -> dict[str, list[Any]]:
    objects = [o for objs in scenes.values() for o in objs]
    vocab: dict[str, list[Any]] = {"count": sorted({len(objs) for objs in scenes.values()})}
    for attr, value in _VALUE.items():
        vocab[attr] = sorted({value(o) for o in objects if value(o) is not None})
    return vocab


def balanced_accuracy(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean over labels of (true-positive rate + true-negative rate) / 2; a label without both a positive and a
    negative test example is left out (one of its rates is undefined)."""
    scores = []
    for label in range(truth.shape[1]):
        positive = truth[:, label] > 0.5
        if positive.all() or not positive.any():
            continue
        hit = predicted[:, label] == positive
        scores.append((hit[positive].float().mean() + hit[~positive].float().mean()) / 2)
    return float(torch.stack(scores).mean()) if scores else float("nan")


def score(predicted: torch.Tensor, truth: torch.Tensor, multilabel: bool) -> float:
    return balanced_accuracy(predicted, truth) if multilabel else float((predicted == truth).float().mean())


def bootstrap_se(
    predictions: Mapping[str, Mapping[str, torch.Tensor]],
    labels: SceneLabels,
    resamples: int = BOOTSTRAP,
    seed: int = 0,
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Standard errors over test images by bootstrap: per source and attribute, and of the paired difference
    mean_shift - none (the same resampled images score both), when both sources are present."""
    g = torch.Generator().manual_seed(seed)
    n = len(labels.ids)
    draws: dict[str, dict[str, list[float]]] = {src: {a: [] for a in p} for src, p in predictions.items()}
    for _ in range(resamples):
        index = torch.randint(n, (n,), generator=g)
        for src, per_attr in predictions.items():
            for attr, predicted in per_attr.items():
                draws[src][attr].append(score(predicted[index], getattr(labels, attr)[index], attr not in MULTICLASS))
    values = {src: {a: torch.tensor(v) for a, v in per.items()} for src, per in draws.items()}
    se = {src: {a: float(v[v.isfinite()].std()) for a, v in per.items()} for src, per in values.items()}
    difference = {}
    if "mean_shift" in values and "none" in values:
        for attr, shift in values["mean_shift"].items():
            d = shift - values["none"][attr]
            difference[attr] = float(d[d.isfinite()].std())
    return se, difference


def majority_accuracy(train: torch.Tensor, test: torch.Tensor, multilabel: bool) -> float:
    """The score of always answering the train set's most frequent value (per label when multi-label: 0.5 in
    balanced accuracy, whatever the value)."""
    if multilabel:
        return balanced_accuracy((train.mean(0) > 0.5).expand_as(test), test)
    return float((test == torch.mode(train[train >= 0]).values).float().mean())


def transfer_probe(
    train_vectors: Mapping[str, torch.Tensor],
    test_vectors: Mapping[str, torch.Tensor],
    train_labels: SceneLabels,
    test_labels: SceneLabels,
) -> dict[str, Any]:
    """Per source: train a probe per attribute on ``train_vectors[source]`` (rows in ``train_labels.ids`` order)
    and score it on ``test_vectors[source]`` (the real test images as that source's model would see them).
    Returns ``{"accuracy": {source: {attribute: acc}}, "se": (same shape, bootstrap over test images),
    "mean_shift_minus_none_se": {attribute: paired SE}, "majority": {attribute: acc}, "train", "test"}``."""
    majority = {
        attr: majority_accuracy(getattr(train_labels, attr), getattr(test_labels, attr), attr not in MULTICLASS)
        for attr in ATTRIBUTES
        if attr in MULTICLASS or getattr(train_labels, attr).shape[1] > 0
    }
    # an attribute whose test labels are all one way (tiny test sets) cannot be scored: left out, not NaN
    majority = {attr: value for attr, value in majority.items() if math.isfinite(value)}
    accuracy: dict[str, dict[str, float]] = {}
    predictions: dict[str, dict[str, torch.Tensor]] = {}
    for source, x in train_vectors.items():
        accuracy[source], predictions[source] = {}, {}
        for attr in majority:
            multilabel = attr not in MULTICLASS
            probe = fit_linear_probe(x.float(), getattr(train_labels, attr), multilabel)
            predictions[source][attr] = predict(probe, test_vectors[source].float(), multilabel)
            accuracy[source][attr] = score(predictions[source][attr], getattr(test_labels, attr), multilabel)
    se, difference_se = bootstrap_se(predictions, test_labels)
    return {"accuracy": accuracy, "se": se, "mean_shift_minus_none_se": difference_se, "majority": majority,
            "train": len(train_labels.ids), "test": len(test_labels.ids)}  # fmt: skip


def _carried(image: float, majority: float) -> bool:
    """The one rule for "the vector carries it": the image-trained probe beats the majority by CARRIED_MARGIN."""
    return image - majority >= CARRIED_MARGIN


def gain_share(accuracy: float, image: float, majority: float) -> float | None:
    """How much of the image-trained probe's gain over the majority baseline a text-trained probe keeps (1.0 =
    all of it); None when the image probe itself gains less than CARRIED_MARGIN (nothing to transfer)."""
    return (accuracy - majority) / (image - majority) if _carried(image, majority) else None


def carried_by_vector(probe: Mapping[str, Any], attribute: str) -> bool:
    """Whether the image-trained probe beats the majority baseline on ``attribute`` by CARRIED_MARGIN."""
    return _carried(probe["accuracy"]["image"][attribute], probe["majority"][attribute])


def probe_statements(probe: Mapping[str, Any], parity: float = 0.9) -> list[str]:
    """Plain conclusions from :func:`transfer_probe`'s result: what the pooled vector carries, and how much of it
    a probe trained on text only keeps on real images."""
    acc, majority = probe["accuracy"], probe["majority"]
    image, attributes = acc["image"], list(majority)
    carried = [a for a in attributes if carried_by_vector(probe, a)]
    missing = [a for a in attributes if a not in carried]
    lines = [
        f"Linear probe on the pooled vector ({probe['train']} train vectors, scored on {probe['test']} real test "
        f"images): trained on real image vectors it beats the majority baseline by {CARRIED_MARGIN} or more on "
        f"{', '.join(carried) or 'nothing'} ("
        + "; ".join(f"{a} {image[a]:.3f} vs {majority[a]:.3f}" for a in attributes)
        + ")"
        + (
            f"; it does not carry {', '.join(missing)} (less than {CARRIED_MARGIN} above the baseline)."
            if missing
            else "."
        )
    ]
    for source in (s for s in acc if s != "image"):
        shares = {a: gain_share(acc[source][a], image[a], majority[a]) for a in carried}
        kept = [a for a, g in shares.items() if g >= parity]
        lines.append(
            f"Trained on text only ({source}), scored on real images: it keeps >= {parity:.0%} of the image probe's "
            f"gain over the majority baseline on {len(kept)} of {len(carried)} attributes "
            f"({', '.join(kept) or 'none'}). "
            + "; ".join(f"{a} {acc[source][a]:.3f} ({shares[a]:.0%} of the gain)" for a in carried)
            + "."
        )
    if "mean_shift" in acc and "none" in acc:
        diff_se = probe.get("mean_shift_minus_none_se", {})
        diffs = {a: acc["mean_shift"][a] - acc["none"][a] for a in attributes}
        better = [a for a in attributes if a in diff_se and diffs[a] > 2 * diff_se[a]]
        worse = [a for a in attributes if a in diff_se and diffs[a] < -2 * diff_se[a]]
        lines.append(
            f"Probe, mean_shift vs none on real images: mean_shift is higher by more than 2 paired standard errors "
            f"on {', '.join(better) or 'no attribute'} and lower on {', '.join(worse) or 'no attribute'}. Per "
            "attribute (mean_shift - none): "
            + "; ".join(f"{a} {d:+.3f}" + (f" (SE {diff_se[a]:.3f})" if a in diff_se else "") for a, d in diffs.items())
            + "."
        )
    return lines


def probe_report_lines(probe: Mapping[str, Any]) -> list[str]:
    """A markdown table: attribute x source (accuracy on real test images) plus the majority baseline."""
    sources = list(probe["accuracy"])
    lines = ["| probe attribute | " + " | ".join(f"trained on {s}" for s in sources) + " | majority |",
             "|---" * (len(sources) + 2) + "|"]  # fmt: skip
    se = probe.get("se", {})
    for attr in probe["majority"]:
        cells = [f"{probe['accuracy'][s][attr]:.3f}" + (f" ± {se[s][attr]:.3f}" if s in se else "") for s in sources]
        lines.append(f"| {attr} | " + " | ".join(cells) + f" | {probe['majority'][attr]:.3f} |")
    return lines
