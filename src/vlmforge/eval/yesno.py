"""Yes/no benchmarks: MME and POPE (and the shapes world's existence questions), each as its reference counts it.

* MME from its release folders: lmms-eval (``tasks/mme/utils.py``); POPE from its JSON files: the LLaVA / Bunny
  script (``eval_pope.py``): per split, then F1 averaged over the splits.
* The VLMEvalKit TSVs of both: VLMEvalKit's ``YOrN_Extraction`` with ``MME_rating`` / ``POPE_rating``
  (``vlmeval/dataset/utils/yorn.py``): POPE counted over all rows, a row in every category it lists.

MME keeps its native scale (subtask score = acc% + acc+%, max 200); the rest are fractions in [0, 1].
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from vlmforge.eval.rules import llava, lmms, robust, vlmevalkit
from vlmforge.eval.types import Scoring, metric, proportion

Metas = Sequence[Mapping[str, Any]]
Metrics = dict[str, dict[str, Any]]
Parse = Callable[..., str]

MME_PERCEPTION = (
    "existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR",
)  # fmt: skip
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def judge_yes_no(parsed: str, target: Any, meta: Mapping[str, Any] | None = None) -> float:
    return float(parsed == str(target).strip().lower())


def judge_same(parsed: str, target: Any, meta: Mapping[str, Any] | None = None) -> float:
    """VLMEvalKit compares the extracted "Yes"/"No" with the answer column as written."""
    return float(parsed == target)


def _text_parser(rule: Callable[[str], str]) -> Parse:
    def parse(raw: str, meta: Mapping[str, Any] | None = None) -> str:
        return rule(raw)

    return parse


# ---- MME ----
def mme_metrics(correct: Sequence[float], metas: Metas) -> Metrics:
    """Per subtask: acc (% questions right), acc+ (% images with all their questions right), score = acc + acc+;
    perception = the sum over its ten subtasks, cognition over the others."""
    per_sub: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for c, m in zip(correct, metas, strict=True):
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
    perception = [scores[s] for s in scores if s in MME_PERCEPTION]
    cognition = [scores[s] for s in scores if s not in MME_PERCEPTION]
    for name, present in (("perception", perception), ("cognition", cognition)):
        if present:
            out[name] = metric(sum(s for s, _ in present), sum(n for _, n in present))
    out["total"] = metric(sum(s for s, _ in scores.values()), len(correct))
    return out


def _mme(parse: Parse, judge: Callable[..., float]) -> Scoring:
    def score(predictions: Sequence[str], targets: Sequence[Any], metas: Metas) -> Metrics:
        correct = [judge(parse(p), t) for p, t in zip(predictions, targets, strict=True)]
        return mme_metrics(correct, metas)

    return Scoring(parse, judge, score)


MME = _mme(_text_parser(lmms.mme_yes_no), judge_yes_no)
MME_ROBUST = _mme(_text_parser(robust.first_word_yes_no), judge_yes_no)
MME_VLMEVALKIT = _mme(_text_parser(vlmevalkit.yes_no_unknown), judge_same)
MME_VLMEVALKIT_ROBUST = _mme(_text_parser(robust.yes_no_unknown), judge_same)
parse_mme, mme_scores = MME.parse, MME.score


# ---- POPE ----
def binary_metrics(pred: np.ndarray, gold: np.ndarray) -> dict[str, Any]:
    """pred/gold are boolean arrays ("yes" = positive); works on a batch of resamples along axis -1. A precision
    or recall with nothing to count is 0."""
    tp = (pred & gold).sum(-1)
    fp = (pred & ~gold).sum(-1)
    fn = (~pred & gold).sum(-1)
    n = pred.shape[-1]
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
    recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"accuracy": (pred == gold).sum(-1) / n, "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": pred.sum(-1) / n}  # fmt: skip


def _block(pred: np.ndarray, gold: np.ndarray, right: np.ndarray | None = None, rounds: int = 200) -> Metrics:
    """POPE metrics of one set of rows, standard errors by a fixed-seed bootstrap (precision, recall and F1 are
    not simple proportions). ``right`` overrides what accuracy counts as right."""
    n = int(pred.shape[0])
    point = binary_metrics(pred, gold)
    idx = np.random.default_rng(0).integers(0, n, size=(rounds, n))
    boot = binary_metrics(pred[idx], gold[idx])
    counts = {"accuracy": n, "yes_ratio": n, "f1": n, "precision": int(pred.sum()), "recall": int(gold.sum())}
    out = {k: metric(float(point[k]), counts[k], float(np.std(boot[k], ddof=1))) for k in point}
    if right is not None:
        out["accuracy"] = proportion(float(right.sum()), n)
    return out


def _pope(parse: Parse) -> Scoring:
    def score(predictions: Sequence[str], targets: Sequence[Any], metas: Metas) -> Metrics:
        """Accuracy, precision, recall, F1, yes-ratio per split (``<split>/f1``...) and averaged over the splits."""
        if not predictions:
            return {"accuracy": metric(None, 0)}
        pred = np.array([parse(p) == "yes" for p in predictions])
        gold = np.array([str(t).strip().lower() == "yes" for t in targets])
        splits = [str(m.get("split", "")) for m in metas]
        names = sorted(set(splits) - {""})
        if len(names) <= 1:
            out = _block(pred, gold)
            return out | ({f"{names[0]}/{k}": v for k, v in out.items()} if names else {})
        out: Metrics = {}
        blocks = {}
        for name in names:
            mask = np.array([s == name for s in splits])
            blocks[name] = _block(pred[mask], gold[mask])
            out.update({f"{name}/{k}": v for k, v in blocks[name].items()})
        for k in blocks[names[0]]:  # the average over splits, as papers report POPE
            vals = [b[k] for b in blocks.values()]
            se = float(np.sqrt(sum(v["stderr"] ** 2 for v in vals))) / len(vals)
            out[k] = metric(sum(v["value"] for v in vals) / len(vals), sum(v["n"] for v in vals), se)
        return out

    return Scoring(parse, judge_yes_no, score)


POPE = _pope(_text_parser(llava.pope_yes_no))
POPE_ROBUST = _pope(_text_parser(robust.pope_yes_no))
parse_pope, pope_scores = POPE.parse, POPE.score


def _pope_vlmevalkit(parse: Parse) -> Scoring:
    def score(predictions: Sequence[str], targets: Sequence[Any], metas: Metas) -> Metrics:
        """F1, precision, recall and accuracy over every row, a row counted once per category it lists (meta
        ``splits``), then per category. An answer that is neither yes nor no is wrong, and negative for F1."""
        rows = [(parse(p), t, s) for p, t, m in zip(predictions, targets, metas, strict=True)
                for s in (m.get("splits") or [None])]  # fmt: skip
        if not rows:
            return {"accuracy": metric(None, 0)}
        out = _yes_no_block(rows)
        for name in sorted({s for _, _, s in rows if s is not None}):
            block = _yes_no_block([r for r in rows if r[2] == name])
            out.update({f"{name}/{k}": v for k, v in block.items()})
        return out

    return Scoring(parse, judge_same, score)


def _yes_no_block(rows: Sequence[tuple[str, Any, str | None]]) -> Metrics:
    pred = np.array([p == "Yes" for p, _, _ in rows])
    gold = np.array([t == "Yes" for _, t, _ in rows])
    right = np.array([p == t for p, t, _ in rows])
    block = _block(pred, gold, right)
    return {k: block[k] for k in ("f1", "accuracy", "precision", "recall")}


POPE_VLMEVALKIT = _pope_vlmevalkit(_text_parser(vlmevalkit.yes_no_unknown))
POPE_VLMEVALKIT_ROBUST = _pope_vlmevalkit(_text_parser(robust.yes_no_unknown))
