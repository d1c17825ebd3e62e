"""Scorers: pure functions ``(raw predictions, targets, metas) -> {metric: {"value", "stderr", "n"}}``.

Each benchmark has a ``parse_*`` (raw text -> answer), a ``judge_*`` (answer, target, meta -> 0..1) and a
``*_scores`` aggregate built on them, so the per-sample column in samples_*.jsonl and the headline number can never
disagree. Accuracies are fractions in [0, 1]; MME keeps its native scale (subtask score = acc% + acc+%, max 200).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from vlmforge.eval import normalize as nz
from vlmforge.eval.types import mean_metric, metric, proportion
from vlmforge.geometry import iou, parse_box

Metas = Sequence[Mapping[str, Any]]
Metrics = dict[str, dict[str, Any]]

MME_PERCEPTION = (
    "existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR",
)  # fmt: skip
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def _per_type(correct: Sequence[float], metas: Metas, key: str = "type") -> Metrics:
    """``<key value>/accuracy`` for every value of ``meta[key]`` (question type, benchmark category...)."""
    buckets: dict[str, list[float]] = defaultdict(list)
    for c, m in zip(correct, metas, strict=True):
        if m.get(key) is not None:
            buckets[str(m[key])].append(c)
    return {f"{name}/accuracy": proportion(sum(v), len(v)) for name, v in sorted(buckets.items())}


def _accuracy(judge: Callable[[Any, Any, Mapping[str, Any]], float], parse: Callable[[str, Mapping], Any]):
    """Build a plain-accuracy scorer (plus per-type breakdown) from a parser and a judge."""

    def score(predictions: Sequence[str], targets: Sequence[Any], metas: Metas) -> Metrics:
        correct = [judge(parse(p, m), t, m) for p, t, m in zip(predictions, targets, metas, strict=True)]
        return {"accuracy": proportion(sum(correct), len(correct)), **_per_type(correct, metas)}

    return score


# ---- exact / normalised match (GQA, shapes color/shape/count/position, user JSONL) ----
def parse_strip(raw: str, meta: Mapping[str, Any] | None = None) -> str:
    return raw.strip()


def parse_vqa(raw: str, meta: Mapping[str, Any] | None = None) -> str:
    return nz.vqa_normalize(raw)


def parse_gqa(raw: str, meta: Mapping[str, Any] | None = None) -> str:
    return nz.simple_normalize(raw)


def judge_equal(parsed: Any, target: Any, meta: Mapping[str, Any] | None = None) -> float:
    return float(parsed == target)


def judge_normalized(parsed: str, target: Any, meta: Mapping[str, Any] | None = None) -> float:
    """``parsed`` is already VQA-normalised; any of several acceptable targets counts."""
    targets = target if isinstance(target, list) else [target]
    return float(any(parsed == nz.vqa_normalize(str(t)) for t in targets))


def judge_gqa(parsed: str, target: Any, meta: Mapping[str, Any] | None = None) -> float:
    return float(parsed == nz.simple_normalize(str(target)))


exact_match_scores = _accuracy(judge_equal, parse_strip)
normalized_match_scores = _accuracy(judge_normalized, parse_vqa)
gqa_scores = _accuracy(judge_gqa, parse_gqa)


# ---- VQAv2 ----
def judge_vqa(parsed: str, target: Any, meta: Mapping[str, Any] | None = None) -> float:
    """Average over the 10-choose-9 annotator subsets of min(#matches / 3, 1)."""
    answers = [nz.vqa_normalize(str(a)) for a in (target if isinstance(target, list) else [target])]
    if len(answers) == 1:  # a single reference answer: plain match
        return float(parsed == answers[0])
    accs = []
    for i in range(len(answers)):
        others = answers[:i] + answers[i + 1 :]
        accs.append(min(1.0, sum(a == parsed for a in others) / 3))
    return sum(accs) / len(accs)


def vqa_scores(predictions: Sequence[str], targets: Sequence[Any], metas: Metas) -> Metrics:
    accs = [judge_vqa(parse_vqa(p), t) for p, t in zip(predictions, targets, strict=True)]
    out = {"accuracy": mean_metric(accs)}
    buckets: dict[str, list[float]] = defaultdict(list)
    for a, m in zip(accs, metas, strict=True):
        if m.get("type"):
            buckets[str(m["type"])].append(a)
    out.update({f"{k}/accuracy": mean_metric(v) for k, v in sorted(buckets.items())})
    return out


# ---- MME ----
def parse_mme(raw: str, meta: Mapping[str, Any] | None = None) -> str:
    return nz.parse_yes_no_first_word(raw)


def judge_yes_no(parsed: str, target: Any, meta: Mapping[str, Any] | None = None) -> float:
    return float(parsed == str(target).strip().lower())


def mme_scores(predictions: Sequence[str], targets: Sequence[Any], metas: Metas) -> Metrics:
    """Per subtask: acc (% questions right), acc+ (% images with all their questions right), score = acc + acc+;
    perception / cognition = sums over the subtasks present."""
    per_sub: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    correct = []
    for p, t, m in zip(predictions, targets, metas, strict=True):
        c = judge_yes_no(parse_mme(p), t)
        correct.append(c)
        per_sub[str(m["subtask"])][str(m["image"])].append(c)
    out: Metrics = {"accuracy": proportion(sum(correct), len(correct))}
    scores: dict[str, tuple[float, int]] = {}
    for sub, images in sorted(per_sub.items()):
        flat = [c for cs in images.values() for c in cs]
        acc = 100 * sum(flat) / len(flat)
        acc_plus = 100 * sum(all(cs) for cs in images.values()) / len(images)
        out[f"{sub}/acc"] = metric(acc, len(flat))
        out[f"{sub}/acc_plus"] = metric(acc_plus, len(images))
        out[f"{sub}/score"] = metric(acc + acc_plus, len(flat))
        scores[sub] = (acc + acc_plus, len(flat))
    for name, subs in (("perception", MME_PERCEPTION), ("cognition", MME_COGNITION)):
        present = [scores[s] for s in subs if s in scores]
        if present:
            out[name] = metric(sum(s for s, _ in present), sum(n for _, n in present))
    out["total"] = metric(sum(s for s, _ in scores.values()), len(correct))
    return out


# ---- POPE (and shapes_exist) ----
def parse_pope(raw: str, meta: Mapping[str, Any] | None = None) -> str:
    return nz.parse_yes_no_pope(raw)


def _binary_metrics(pred: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """pred/gold are 0/1 arrays ("yes" = 1 = positive); works on a batch of resamples along axis -1."""
    tp = (pred & gold).sum(-1)
    fp = (pred & ~gold).sum(-1)
    fn = (~pred & gold).sum(-1)
    n = pred.shape[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {
        "accuracy": (pred == gold).sum(-1) / n,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": pred.sum(-1) / n,
    }


def _pope_block(pred: np.ndarray, gold: np.ndarray, seed: int = 0, rounds: int = 200) -> Metrics:
    n = int(pred.shape[0])
    point = _binary_metrics(pred, gold)
    # Standard errors by a fixed-seed bootstrap: precision/recall/F1 are not simple proportions.
    idx = np.random.default_rng(seed).integers(0, n, size=(rounds, n))
    boot = _binary_metrics(pred[idx], gold[idx])
    counts = {
        "accuracy": n, "yes_ratio": n, "f1": n,
        "precision": int(pred.sum()), "recall": int(gold.sum()),
    }  # fmt: skip
    return {k: metric(float(point[k]), counts[k], float(np.std(boot[k], ddof=1))) for k in point}


def pope_scores(predictions: Sequence[str], targets: Sequence[Any], metas: Metas) -> Metrics:
    """Accuracy, precision, recall, F1, yes-ratio ("yes" positive); per split and averaged over the splits."""
    if not predictions:
        return {"accuracy": metric(None, 0)}
    pred = np.array([parse_pope(p) == "yes" for p in predictions])
    gold = np.array([str(t).strip().lower() == "yes" for t in targets])
    splits = [str(m.get("split", "")) for m in metas]
    names = sorted(set(splits) - {""})
    if len(names) <= 1:
        out = _pope_block(pred, gold)
        if names:
            out.update({f"{names[0]}/{k}": v for k, v in out.items()})
        return out
    out: Metrics = {}
    blocks = {}
    for name in names:
        mask = np.array([s == name for s in splits])
        blocks[name] = _pope_block(pred[mask], gold[mask])
        out.update({f"{name}/{k}": v for k, v in blocks[name].items()})
    for k in blocks[names[0]]:  # the average over splits, as papers report POPE
        vals = [b[k] for b in blocks.values()]
        se = float(np.sqrt(sum(v["stderr"] ** 2 for v in vals))) / len(vals)
        out[k] = metric(sum(v["value"] for v in vals) / len(vals), sum(v["n"] for v in vals), se)
    return out


# ---- option letters: ScienceQA, MMBench (circular), shapes_mc, SEED ----
def parse_scienceqa(raw: str, meta: Mapping[str, Any]) -> str | None:
    return nz.parse_letter_scienceqa(raw, list(meta["choices"]))


def parse_option(raw: str, meta: Mapping[str, Any]) -> str | None:
    return nz.infer_option(raw, meta["choices"])


scienceqa_scores = _accuracy(judge_equal, parse_scienceqa)


def multiple_choice_scores(predictions: Sequence[str], targets: Sequence[Any], metas: Metas) -> Metrics:
    """Option-letter accuracy. Samples sharing ``meta["group"]`` are rotations of one question (circular
    evaluation): the question counts only if every rotation is right. ``vanilla_accuracy`` scores only the
    original order (rotation 0)."""
    correct = [judge_equal(parse_option(p, m), t) for p, t, m in zip(predictions, targets, metas, strict=True)]
    groups: dict[str, list[float]] = defaultdict(list)
    first: dict[str, Mapping[str, Any]] = {}
    vanilla = []
    for c, m in zip(correct, metas, strict=True):
        g = str(m.get("group", id(m)))
        groups[g].append(c)
        first.setdefault(g, m)
        if m.get("rotation", 0) == 0:
            vanilla.append(c)
    circ = [float(all(cs)) for cs in groups.values()]
    out = {"accuracy": proportion(sum(circ), len(circ)), "vanilla_accuracy": proportion(sum(vanilla), len(vanilla))}
    out.update(_per_type(circ, [first[g] for g in groups]))
    return out


# ---- referring expressions ----
def parse_rec(raw: str, meta: Mapping[str, Any] | None = None) -> list[float] | None:
    return parse_box(raw)


def judge_rec(parsed: list[float] | None, target: Any, meta: Mapping[str, Any] | None = None) -> float:
    """Acc@0.5 for one sample; ``target`` is a box or a list of boxes (any one matching counts)."""
    if parsed is None:
        return 0.0
    boxes = target if target and isinstance(target[0], list | tuple) else [target]
    return float(max(iou(parsed, b) for b in boxes) >= 0.5)


def rec_scores(predictions: Sequence[str], targets: Sequence[Any], metas: Metas) -> Metrics:
    parsed = [parse_rec(p) for p in predictions]
    hits = [judge_rec(b, t) for b, t in zip(parsed, targets, strict=True)]
    ious = []
    for b, t in zip(parsed, targets, strict=True):
        boxes = t if t and isinstance(t[0], list | tuple) else [t]
        ious.append(max(iou(b, g) for g in boxes) if b is not None else 0.0)
    return {
        "acc@0.5": proportion(sum(hits), len(hits)),
        "mean_iou": mean_metric(ious),
        "parse_rate": proportion(sum(b is not None for b in parsed), len(parsed)),
    }


# ---- generic records (user JSONL, MMMU): multiple choice when the sample has choices, else normalised match ----
def parse_generic(raw: str, meta: Mapping[str, Any]) -> Any:
    return parse_option(raw, meta) if meta.get("choices") else parse_vqa(raw)


def judge_generic(parsed: Any, target: Any, meta: Mapping[str, Any]) -> float:
    return judge_equal(parsed, target) if meta.get("choices") else judge_normalized(parsed, target)


generic_scores = _accuracy(judge_generic, parse_generic)
