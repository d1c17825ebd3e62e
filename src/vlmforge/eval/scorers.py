"""Scorers: pure functions ``(raw predictions, targets, metas) -> {metric: {"value", "stderr", "n"}}``.

Each benchmark has a ``parse_*`` (raw text -> answer), a ``judge_*`` (answer, target, meta -> 0..1) and a
``*_scores`` aggregate built on them, so the per-sample column in samples_*.jsonl and the headline number can never
disagree. The plain names follow the benchmark's reference harness (``vlmforge.eval.rules``); the ``*_ROBUST``
:class:`~vlmforge.eval.types.Scoring` objects are ``--scoring robust``. Yes/no benchmarks (MME, POPE) are in
``vlmforge.eval.yesno``. Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vlmforge.eval import normalize as nz
from vlmforge.eval.rules import llava, lmms, robust, vlmevalkit
from vlmforge.eval.types import Scoring, mean_metric, proportion
from vlmforge.geometry import iou, parse_box

Metas = Sequence[Mapping[str, Any]]
Metrics = dict[str, dict[str, Any]]
Parse = Callable[[str, Mapping[str, Any]], Any]


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


def judge_equal(parsed: Any, target: Any, meta: Mapping[str, Any] | None = None) -> float:
    return float(parsed == target)


def parse_strip(raw: str, meta: Mapping[str, Any] | None = None) -> str:
    return raw.strip()


exact_match_scores = _accuracy(judge_equal, parse_strip)


# ---- normalised match (shapes color/shape/count/position, LLaVA QA, open questions of user JSONL) ----
def _targets(target: Any) -> list[Any]:
    return target if isinstance(target, list) else [target]


def _normalized(normalize: Callable[[str], str]) -> Scoring:
    def parse(raw: str, meta: Mapping[str, Any] | None = None) -> str:
        return normalize(raw)

    def judge(parsed: str, target: Any, meta: Mapping[str, Any] | None = None) -> float:
        """``parsed`` is already normalised; any of several acceptable targets counts."""
        return float(any(parsed == normalize(str(t)) for t in _targets(target)))

    return Scoring(parse, judge, _accuracy(judge, parse))


NORMALIZED = _normalized(nz.vqa_normalize)
NORMALIZED_ROBUST = _normalized(nz.vqa_normalize_robust)
parse_vqa, judge_normalized, normalized_match_scores = NORMALIZED.parse, NORMALIZED.judge, NORMALIZED.score


# ---- GQA (lmms-eval: exact match ignoring case and punctuation) ----
def parse_gqa(raw: str, meta: Mapping[str, Any] | None = None) -> str:
    return lmms.gqa_parse(raw)


def judge_gqa(parsed: str, target: Any, meta: Mapping[str, Any] | None = None) -> float:
    return float(parsed == lmms.exact_match_form(str(target)))


gqa_scores = _accuracy(judge_gqa, parse_gqa)


# ---- VQAv2 (lmms-eval) ----
def _vqa(normalize: Callable[[str], str], accuracy: Callable[[str, Sequence[str]], float]) -> Scoring:
    def parse(raw: str, meta: Mapping[str, Any] | None = None) -> str:
        return normalize(raw)

    def judge(parsed: str, target: Any, meta: Mapping[str, Any] | None = None) -> float:
        """Average over the annotators of min(#other annotators matching / 3, 1)."""
        return accuracy(parsed, [normalize(str(a)) for a in _targets(target)])

    def score(predictions: Sequence[str], targets: Sequence[Any], metas: Metas) -> Metrics:
        accs = [judge(parse(p), t) for p, t in zip(predictions, targets, strict=True)]
        buckets: dict[str, list[float]] = defaultdict(list)
        for a, m in zip(accs, metas, strict=True):
            if m.get("type"):
                buckets[str(m["type"])].append(a)
        return {"accuracy": mean_metric(accs), **{f"{k}/accuracy": mean_metric(v) for k, v in sorted(buckets.items())}}

    return Scoring(parse, judge, score)


VQAV2 = _vqa(nz.vqa_normalize, lmms.vqa_accuracy)
VQAV2_ROBUST = _vqa(nz.vqa_normalize_robust, robust.vqa_accuracy)
judge_vqa, vqa_scores = VQAV2.judge, VQAV2.score


# ---- ScienceQA (LLaVA's eval_science_qa.py) ----
def parse_scienceqa(raw: str, meta: Mapping[str, Any]) -> str | None:
    return llava.scienceqa_letter(raw)


def parse_scienceqa_robust(raw: str, meta: Mapping[str, Any]) -> str | None:
    return robust.scienceqa_letter(raw, list(meta["choices"]))


scienceqa_scores = _accuracy(judge_equal, parse_scienceqa)
SCIENCEQA_ROBUST = Scoring(parse_scienceqa_robust, judge_equal, _accuracy(judge_equal, parse_scienceqa_robust))


# ---- option letters (VLMEvalKit's matching): MMBench (circular), SEED, MMMU, shapes_mc ----
def parse_option(raw: str, meta: Mapping[str, Any]) -> str | None:
    return vlmevalkit.can_infer(raw, meta["choices"])


def parse_option_robust(raw: str, meta: Mapping[str, Any]) -> str | None:
    return robust.can_infer(raw, meta["choices"])


def _breakdown(hits: Sequence[float], metas: Metas) -> Metrics:
    """VLMEvalKit's report: accuracy per ``l2-category`` and per category (``type``), per split when the data
    has several (``<split>:<category>/accuracy``, with ``<split>/accuracy`` overall)."""
    splits = sorted({str(m["split"]) for m in metas if m.get("split") is not None})
    if len(splits) <= 1:
        return {**_per_type(hits, metas, "l2-category"), **_per_type(hits, metas)}
    out: Metrics = {}
    for split in splits:
        rows = [(h, m) for h, m in zip(hits, metas, strict=True) if str(m.get("split")) == split]
        part = _breakdown([h for h, _ in rows], [{k: v for k, v in m.items() if k != "split"} for _, m in rows])
        out[f"{split}/accuracy"] = proportion(sum(h for h, _ in rows), len(rows))
        out.update({f"{split}:{key}": value for key, value in part.items()})
    return out


def _multiple_choice(parse: Parse) -> Scoring:
    def score(predictions: Sequence[str], targets: Sequence[Any], metas: Metas) -> Metrics:
        """Samples sharing ``meta["group"]`` are the rotations of one question (circular evaluation): it counts
        only if every rotation is right. ``vanilla_accuracy`` scores the original order (rotation 0) alone."""
        correct = [judge_equal(parse(p, m), t) for p, t, m in zip(predictions, targets, metas, strict=True)]
        groups: dict[str, list[float]] = defaultdict(list)
        original: dict[str, Mapping[str, Any]] = {}
        vanilla = []
        for c, m in zip(correct, metas, strict=True):
            g = str(m.get("group", id(m)))
            groups[g].append(c)
            if m.get("rotation", 0) == 0:
                vanilla.append(c)
                original[g] = m
        circular = [float(all(cs)) for cs in groups.values()]
        out = {"accuracy": proportion(sum(circular), len(circular))}
        if any(len(cs) > 1 for cs in groups.values()):
            out["vanilla_accuracy"] = proportion(sum(vanilla), len(vanilla))
        out.update(_breakdown(circular, [original.get(g, {}) for g in groups]))
        return out

    return Scoring(parse, judge_equal, score)


OPTION = _multiple_choice(parse_option)
OPTION_ROBUST = _multiple_choice(parse_option_robust)
multiple_choice_scores = OPTION.score


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
