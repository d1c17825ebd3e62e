"""vlmforge's MME, VQAv2 and GQA scoring against lmms-eval's own code, imported, on several hundred seeded messy
answers: every parsed answer, per-question score and aggregate must be the same."""

from __future__ import annotations

import copy
import random
import statistics

import pytest
from PIL import ImageFile

from eval_messy import WORD_CORES, word_answers, yes_no_answers
from vlmforge.eval import scorers as sc
from vlmforge.eval import yesno as yn

_WHY = "lmms-eval is not installed: `make install` adds it (pip install --no-deps lmms-eval==0.7.3 + the parity extra)"
lmms_mme = pytest.importorskip("lmms_eval.tasks.mme.utils", reason=_WHY)
lmms_vqav2 = pytest.importorskip("lmms_eval.tasks.vqav2.utils", reason=_WHY)
lmms_metrics = pytest.importorskip("lmms_eval.api.metrics", reason=_WHY)
# Importing lmms-eval tells PIL, for the whole process, to pad truncated images silently; the rest of the suite
# checks that vlmforge refuses them, so the default comes back.
ImageFile.LOAD_TRUNCATED_IMAGES = False

N_IMAGES_PER_SUBTASK = 12  # 14 subtasks x 12 images x 2 questions = 336 answers


def _mme_questions() -> list[dict]:
    rng = random.Random(23)
    docs = []
    for category in (*yn.MME_PERCEPTION, *yn.MME_COGNITION):
        for i in range(N_IMAGES_PER_SUBTASK):
            answers = ["Yes", "No"] if rng.random() < 0.5 else ["No", "Yes"]
            docs += [{"question_id": f"{category}/{i}.png", "category": category, "answer": a} for a in answers]
    return docs


def test_mme_matches_lmms_eval():
    docs = _mme_questions()
    preds = yes_no_answers(seed=1, n=len(docs))
    assert len(docs) >= 300 and "" in preds and "Not sure" in preds
    assert [yn.MME.parse(p) for p in preds] == [lmms_mme.parse_pred_ans(p) for p in preds]

    results = [lmms_mme.mme_process_results(doc, [p]) for doc, p in zip(docs, preds, strict=True)]
    ours = yn.MME.score(preds, [d["answer"].lower() for d in docs],
                        [{"subtask": d["category"], "image": d["question_id"]} for d in docs])  # fmt: skip

    def reference(key: str, category: str | None = None) -> float:
        rows = [r[key] for r in results if key in r and category in (None, r[key]["category"])]
        return lmms_mme.mme_aggregate_results(rows)

    assert ours["perception"]["value"] == pytest.approx(reference("mme_perception_score"), abs=1e-9)
    assert ours["cognition"]["value"] == pytest.approx(reference("mme_cognition_score"), abs=1e-9)
    for category in yn.MME_PERCEPTION:
        expected = reference("mme_perception_score", category)
        assert ours[f"{category}/score"]["value"] == pytest.approx(expected, abs=1e-9), category
    for category in yn.MME_COGNITION:
        expected = reference("mme_cognition_score", category)
        assert ours[f"{category}/score"]["value"] == pytest.approx(expected, abs=1e-9), category


def _vqa_docs(n: int) -> tuple[list[dict], list[str]]:
    rng = random.Random(7)
    docs, bases = [], []
    for i in range(n):
        base = rng.choice(WORD_CORES)
        pool = [base, base, base.upper(), rng.choice(WORD_CORES), rng.choice(WORD_CORES)]
        answers = [rng.choice(pool) for _ in range(10)]
        docs.append({"question_id": i, "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1}
                                                   for k, a in enumerate(answers)]})  # fmt: skip
        bases.append(base)
    return docs, bases


def test_vqav2_matches_lmms_eval():
    docs, bases = _vqa_docs(320)
    preds = word_answers(seed=2, n=len(docs), targets=bases)
    targets = [[a["answer"] for a in d["answers"]] for d in docs]
    pairs = zip(docs, preds, strict=True)
    reference = [lmms_vqav2.vqav2_process_results(copy.deepcopy(d), [p])["exact_match"] for d, p in pairs]
    ours = [sc.VQAV2.judge(sc.VQAV2.parse(p), t) for p, t in zip(preds, targets, strict=True)]
    assert ours == pytest.approx(reference, abs=1e-9)
    assert 0.2 < statistics.mean(reference) < 0.8  # a mix of right, partly right and wrong answers
    score = sc.VQAV2.score(preds, targets, [{}] * len(preds))["accuracy"]["value"]
    assert score == pytest.approx(statistics.mean(reference), abs=1e-9)


def test_gqa_matches_lmms_eval():
    rng = random.Random(11)
    gold = [
        rng.choice(["yes", "no", "left", "right", "red", "t-shirt", "istanbul", "dog", "top left"]) for _ in range(320)
    ]
    preds = word_answers(seed=3, n=len(gold), targets=gold)

    def reference(pred: str, target: str) -> float:  # lmms-eval's generate_until path strips the output first
        kwargs = {"ignore_case": True, "ignore_punctuation": True}
        return float(lmms_metrics.exact_match_hf_evaluate(predictions=[pred.strip()], references=[target], **kwargs)
                     ["exact_match"])  # fmt: skip

    expected = [reference(p, t) for p, t in zip(preds, gold, strict=True)]
    assert [sc.judge_gqa(sc.parse_gqa(p), t) for p, t in zip(preds, gold, strict=True)] == expected
    assert 0.1 < statistics.mean(expected) < 0.9
    score = sc.gqa_scores(preds, gold, [{}] * len(gold))["accuracy"]["value"]
    assert score == pytest.approx(statistics.mean(expected), abs=1e-12)
