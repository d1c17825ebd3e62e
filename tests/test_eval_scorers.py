"""Scorers against hand-computed values from the reference definitions (docs/evaluation.md: the scorers of
lmms-eval, VLMEvalKit and the benchmarks' own scripts), and the rules of robust scoring. The comparison with the
references' own code on many answers is in test_eval_parity_*.py."""

from __future__ import annotations

import pytest

from vlmforge.eval import normalize as nz
from vlmforge.eval import scorers as sc
from vlmforge.eval import yesno as yn
from vlmforge.eval.rules import llava, lmms, robust, vlmevalkit
from vlmforge.eval.tasks.common import rotations
from vlmforge.geometry import iou, parse_box


def value(metrics, key):
    return metrics[key]["value"]


# ---- VQAv2 ----
@pytest.mark.parametrize(
    ("matches", "expected"),
    # k of 10 annotators gave the answer. Leaving out one of those k: min((k-1)/3, 1); leaving out one of the
    # other 10-k: min(k/3, 1). Average over the 10 subsets.
    [(0, 0.0), (1, (1 * 0 + 9 * (1 / 3)) / 10), (2, (2 * (1 / 3) + 8 * (2 / 3)) / 10),
     (3, (3 * (2 / 3) + 7 * 1) / 10), (4, 1.0), (10, 1.0)],
)  # fmt: skip
def test_vqa_ten_choose_nine_average(matches, expected):
    answers = ["cat"] * matches + ["dog"] * (10 - matches)
    assert sc.judge_vqa(sc.parse_vqa("cat"), answers) == pytest.approx(expected)


def test_vqa_two_of_ten_is_0_6_and_normalisation_applies():
    answers = ["two"] * 2 + ["3"] * 8
    assert sc.judge_vqa(sc.parse_vqa("Two."), answers) == pytest.approx(0.6)
    metrics = sc.vqa_scores(["2", "3", "cat"], [answers, answers, answers], [{}, {}, {}])
    assert value(metrics, "accuracy") == pytest.approx((0.6 + 1.0 + 0.0) / 3)
    assert metrics["accuracy"]["n"] == 3 and metrics["accuracy"]["stderr"] > 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("Two.", "2"), ("The cat", "cat"), ("an apple!", "apple"), ("dont", "don't"), ("1,000", "1000"),
     ("black-and-white", "black and white"), ("yes\n", "yes"), ("3.5", "3.5"), ("none", "0"),
     ("1,,000", "1000"), ("eleven", "eleven")],
)  # fmt: skip
def test_vqa_normalisation(raw, expected):
    assert nz.vqa_normalize(raw) == expected


def test_vqa_reference_quirks_and_their_robust_fixes():
    many = "a." * 40  # the reference drops only the first 32 periods
    assert nz.vqa_normalize(many).count(".") == 8 and "." not in nz.vqa_normalize_robust(many)
    assert nz.vqa_normalize_robust("Eleven") == "11" and nz.vqa_normalize_robust("twenty") == "20"
    # one reference answer leaves no other annotator to agree with: 0 in lmms-eval, a plain match when robust
    assert sc.VQAV2.judge("cat", ["cat"]) == 0.0 and sc.VQAV2_ROBUST.judge("cat", ["cat"]) == 1.0


# ---- MME ----
def test_mme_acc_plus_and_sums():
    rows = [  # (subtask, image, prediction, answer)
        ("existence", "1.jpg", "Yes, there is.", "yes"), ("existence", "1.jpg", "No", "no"),  # image right
        ("existence", "2.jpg", "yes", "yes"), ("existence", "2.jpg", "Maybe yes", "no"),  # one wrong
        ("OCR", "3.jpg", "no", "yes"), ("OCR", "3.jpg", "yes", "no"),  # both wrong
        ("code_reasoning", "4.jpg", "YES.", "yes"), ("code_reasoning", "4.jpg", "No.", "no"),
    ]  # fmt: skip
    m = yn.mme_scores([r[2] for r in rows], [r[3] for r in rows], [{"subtask": r[0], "image": r[1]} for r in rows])
    assert value(m, "existence/acc") == pytest.approx(75.0)  # 3 of 4 questions
    assert value(m, "existence/acc_plus") == pytest.approx(50.0)  # 1 of 2 images
    assert value(m, "existence/score") == pytest.approx(125.0)
    assert value(m, "OCR/score") == 0.0
    assert value(m, "perception") == pytest.approx(125.0)
    assert value(m, "cognition") == pytest.approx(200.0)
    assert value(m, "accuracy") == pytest.approx(5 / 8)


@pytest.mark.parametrize(
    ("raw", "reference", "robust_"),
    [("Yes", "yes", "yes"), ("no.", "no", "no"), ("NO, it is not", "no", "no"), ("The answer is yes", "other", "other"),
     ("", "other", "other"), ("Not sure", "no", "other"), ("None", "no", "other"), ("yesterday", "yes", "other"),
     ("y", "yes", "yes"), ("N.", "no", "no"), ("I think yes", "other", "other"), ("Yes!", "yes", "yes"),
     ("Nope, none", "no", "no"), ("Nothing", "no", "other")],
)  # fmt: skip
def test_mme_yes_no(raw, reference, robust_):
    assert lmms.mme_yes_no(raw) == reference  # the first four characters decide
    assert robust.first_word_yes_no(raw) == robust_  # the first word decides


# ---- POPE ----
def test_pope_metrics_by_hand():
    preds = ["Yes.", "No, there is not.", "yes", "There is not a dog.", "Yes"]
    gold = ["yes", "yes", "yes", "no", "no"]
    # parsed: yes no yes no yes -> TP=2 FN=1 TN=1 FP=1
    m = yn.pope_scores(preds, gold, [{}] * 5)
    assert value(m, "accuracy") == pytest.approx(3 / 5)
    assert value(m, "precision") == pytest.approx(2 / 3)
    assert value(m, "recall") == pytest.approx(2 / 3)
    assert value(m, "f1") == pytest.approx(2 / 3)
    assert value(m, "yes_ratio") == pytest.approx(3 / 5)
    assert m["precision"]["n"] == 3 and m["recall"]["n"] == 3


@pytest.mark.parametrize(
    ("raw", "reference", "robust_"),
    [("Not really. Yes.", "yes", "no"), ("I see no dog", "no", "no"), ("Nothing suggests a dog", "yes", "yes"),
     ("Yes. No.", "yes", "yes"), ("NO", "yes", "no"), ("No", "no", "no"), ("no!", "yes", "no"),
     ("No;", "yes", "no"), ("Yes, not a cat but a dog", "no", "no"), ("No\nthere is none", "yes", "no")],
)  # fmt: skip
def test_pope_first_sentence_rule(raw, reference, robust_):
    assert llava.pope_yes_no(raw) == reference  # case-sensitive words split on single spaces
    assert robust.pope_yes_no(raw) == robust_


def test_pope_average_over_splits():
    # random: all right (acc 1, f1 1); popular: all "yes" on yes,no -> acc .5, p .5, r 1, f1 2/3, yes-ratio 1
    preds = ["yes", "no", "yes", "yes"]
    gold = ["yes", "no", "yes", "no"]
    metas = [{"split": "random"}] * 2 + [{"split": "popular"}] * 2
    m = yn.pope_scores(preds, gold, metas)
    assert value(m, "popular/f1") == pytest.approx(2 / 3)
    assert value(m, "random/f1") == pytest.approx(1.0)
    assert value(m, "f1") == pytest.approx((1 + 2 / 3) / 2)
    assert value(m, "yes_ratio") == pytest.approx((0.5 + 1.0) / 2)


# ---- option letters ----
@pytest.mark.parametrize(
    ("raw", "reference", "robust_"),
    [("B", "B", "B"), ("B. a cat", "B", "B"), ("The answer is C.", "C", "C"), ("The answer is C", None, "C"),
     ("The answer is C!", "C", "C"), ("The answer is CAT", "C", None), ("b", None, None), ("E", "E", None),
     ("The answer is A. The answer is B.", None, None), ("B.", None, "B"), ("  A ", None, "A"), ("(D)", None, "D")],
)  # fmt: skip
def test_scienceqa_letter(raw, reference, robust_):
    assert llava.scienceqa_letter(raw) == reference  # "E" is read, and judged wrong for a four-option question
    assert robust.scienceqa_letter(raw, ["A", "B", "C", "D"]) == robust_


@pytest.mark.parametrize(
    ("raw", "reference", "robust_"),
    [("A", "A", "A"), ("(B)", "B", "B"), ("The answer is C", "C", "C"), ("A or B", None, None),
     ("Answer: D", None, None), ("I think it is the red circle", "A", "A"), ("B. blue square", "B", "B"),
     ("circle", None, None), ("b", None, "B"), ("(c).", None, "C"),
     ("C is right because the other two shapes are not green", None, None),  # a letter must be among the last 4
     ("the correct answer is **b** here, because the square is blue and large", "B", "B"),
     ("Cannot determine the answer", "Z", "Z"), ("Z", "Z", "Z"),
     ("The answer is E since the star is dim and far", None, "E")],
)  # fmt: skip
def test_infer_option(raw, reference, robust_):
    choices = {"A": "red circle", "B": "blue square", "C": "green circle", "E": "grey star"}
    assert vlmevalkit.can_infer(raw, choices) == reference
    assert robust.can_infer(raw, choices) == robust_


def test_rotations_move_the_answer():
    rots = rotations("q", ["a", "b", "c"], 1)
    assert [r[2] for r in rots] == ["B", "A", "C"]
    assert rots[1][1] == {"A": "b", "B": "c", "C": "a"}
    assert all(r[1][r[2]] == "b" for r in rots)


def test_circular_mc_counts_question_only_if_every_rotation_right():
    q1 = rotations("q1", ["x", "y", "z"], 0)
    q2 = rotations("q2", ["x", "y", "z"], 2)
    metas = [{"choices": c, "group": g, "rotation": k} for g, rs in (("q1", q1), ("q2", q2)) for _, c, _, k in rs]
    targets = [a for rs in (q1, q2) for _, _, a, _ in rs]
    preds = list(targets)
    preds[4] = "A" if targets[4] != "A" else "B"  # q2 rotation 1 wrong
    m = sc.multiple_choice_scores(preds, targets, metas)
    assert value(m, "accuracy") == pytest.approx(0.5) and m["accuracy"]["n"] == 2
    assert value(m, "vanilla_accuracy") == pytest.approx(1.0)  # rotation 0 of both is right


# ---- REC ----
@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [([0, 0, 1, 1], [0, 0, 1, 1], 1.0), ([0, 0, 1, 1], [2, 2, 3, 3], 0.0), ([0, 0, 1, 1], [1, 0, 2, 1], 0.0),
     ([0, 0, 2, 2], [1, 0, 3, 2], 1 / 3), ([0, 0, 1, 1], [0, 0, 2, 2], 0.25), ([2, 2, 0, 0], [0, 0, 2, 1], 0.5),
     ([0, 0, 0, 0], [0, 0, 0, 0], 0.0)],
)  # fmt: skip
def test_iou(a, b, expected):
    assert iou(a, b) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("raw", "box"),
    [("The box is [0.1, 0.2, 0.5, 0.6].", [0.1, 0.2, 0.5, 0.6]), ("[1,2,3]", None), ("(10, 20, 30, 40)",
     [10, 20, 30, 40]), ("no box", None), ("[-1, 0, 2.5, 3]", [-1, 0, 2.5, 3])],
)  # fmt: skip
def test_parse_box(raw, box):
    assert parse_box(raw) == box


def test_rec_acc_at_half():
    gt = [[0, 0, 2, 2]]
    preds = ["[0, 0, 2, 1]", "[0, 0, 1, 1]", "I don't know"]  # IoU .5 (counts), .25, unparseable
    m = sc.rec_scores(preds, [gt] * 3, [{}] * 3)
    assert value(m, "acc@0.5") == pytest.approx(1 / 3)
    assert value(m, "mean_iou") == pytest.approx((0.5 + 0.25 + 0) / 3)
    assert value(m, "parse_rate") == pytest.approx(2 / 3)


# ---- exact / normalised ----
def test_gqa_and_normalised_match():
    # lmms-eval: case and ASCII punctuation ignored, nothing else ("a dog" is not "dog")
    assert value(sc.gqa_scores(["Yes.", "left", "a dog", " t-shirt "], ["yes", "right", "dog", "tshirt"], [{}] * 4),
                 "accuracy") == pytest.approx(2 / 4)  # fmt: skip
    m = sc.normalized_match_scores(
        ["Red.", "the circle", "three", "top-left"],
        ["red", "circle", "3", "top left"],
        [{"type": "color"}, {"type": "shape"}, {"type": "count"}, {"type": "position"}],
    )
    assert value(m, "accuracy") == 1.0 and value(m, "count/accuracy") == 1.0
    assert value(sc.exact_match_scores(["Red", "red "], ["red", "red"], [{}, {}]), "accuracy") == 0.5
