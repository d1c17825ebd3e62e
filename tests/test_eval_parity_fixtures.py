"""vlmforge against the numbers that the reference scripts printed, where the reference cannot be imported here
(VLMEvalKit's matcher, circular evaluation and yes/no rating; Bunny's POPE and ScienceQA scripts).

Each fixture in tests/fixtures/eval_parity holds the questions, seeded messy answers (from tests/eval_messy.py)
and the reference's numbers, and says how they were produced and at which commit. Every metric the reference
reports must come out the same (1e-9). The TSV benchmarks go through their loaders, as a user's file would.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from eval_helpers import parity_fixture as fixture
from eval_helpers import write_vlmevalkit_tsv as write_tsv
from eval_messy import letter_answers, word_answers, yes_no_answers
from vlmforge.eval import scorers as sc
from vlmforge.eval import yesno as yn
from vlmforge.eval.tasks import get_task


def score_tsv(tmp_path: Path, task: str, fix: dict) -> tuple[dict, list]:
    """Load the fixture's rows through the task's loader and score the fixture's answers."""
    path = write_tsv(tmp_path / f"{task}.tsv", fix["columns"], fix["rows"])
    samples = get_task(task).load({task: str(path)})
    answer = {str(row[0]): p for row, p in zip(fix["rows"], fix["predictions"], strict=True)}
    preds = [answer[s.id] for s in samples]
    return get_task(task).score(preds, [s.target for s in samples], [s.meta for s in samples]), samples


def assert_same(ours: dict, expected: dict, skip: tuple[str, ...] = ()) -> None:
    for key, value in expected.items():
        if key in skip:
            continue
        assert key in ours, f"no metric {key!r}"
        assert ours[key]["value"] == pytest.approx(value, abs=1e-9), key


def _choices(fix: dict, row: list) -> dict[str, str]:
    return {c: row[fix["columns"].index(c)] for c in "ABCDEFG" if c in fix["columns"] and
            row[fix["columns"].index(c)] != "nan"}  # fmt: skip


def test_mmbench_circular_and_vanilla_match_vlmevalkit(tmp_path):
    fix = fixture("mmbench_circular")
    col = fix["columns"].index
    questions = [(_choices(fix, r), r[col("answer")]) for r in fix["rows"]]
    assert letter_answers(fix["seed"], questions) == fix["predictions"]  # the answers are regenerable
    ours, samples = score_tsv(tmp_path, "mmbench_tsv", fix)
    assert len(samples) == fix["expected"]["n_rows"] >= 300
    assert ours["accuracy"]["n"] == fix["expected"]["n_questions"]  # the copies grouped by index % 1e6
    assert_same(ours, fix["expected"], skip=("n_rows", "n_questions"))


@pytest.mark.parametrize("name", ["seed", "mmmu"])
def test_seed_and_mmmu_match_vlmevalkit(tmp_path, name):
    fix = fixture(name)
    ours, samples = score_tsv(tmp_path, f"{name}_tsv", fix)
    assert len(samples) >= 300 and len(fix["expected"]) > 3
    assert_same(ours, fix["expected"])
    if name == "mmmu":  # an open question is matched against its answer, as VLMEvalKit's MMMU_preproc does
        open_rows = [s for s in samples if s.meta["choices"].get("B") == "Other Answers"]
        assert open_rows and all(s.target == "A" for s in open_rows)
        first = fix["columns"].index("answer")
        opens = [i for i, r in enumerate(fix["rows"]) if r[fix["columns"].index("A")] == "nan"]
        assert (
            fix["predictions"][opens[0]] == word_answers(fix["seed"] + opens[0], 1, [fix["rows"][opens[0]][first]])[0]
        )


@pytest.mark.parametrize(("name", "task"), [("mme_tsv", "mme_tsv"), ("pope_tsv", "pope_tsv")])
def test_yes_no_tsvs_match_vlmevalkit(tmp_path, name, task):
    fix = fixture(name)
    assert yes_no_answers(fix["seed"], len(fix["rows"])) == fix["predictions"]
    assert [get_task(task).parse(p, {}) for p in fix["predictions"]] == fix["extracted"]
    ours, samples = score_tsv(tmp_path, task, fix)
    assert len(samples) >= 300
    assert_same(ours, fix["expected"])


def test_pope_matches_bunny_eval_pope(tmp_path):
    fix = fixture("pope_bunny")
    preds = fix["predictions"]
    assert yes_no_answers(fix["seed"], len(preds)) == preds and len(preds) >= 300
    splits = [s for s in ("adversarial", "popular", "random") for _ in range(len(fix["labels"][s]))]
    labels = [label for s in ("adversarial", "popular", "random") for label in fix["labels"][s]]
    ours = yn.POPE.score(preds, labels, [{"split": s} for s in splits])
    assert_same(ours, fix["expected"])


def test_scienceqa_matches_bunny_eval_science_qa():
    fix = fixture("scienceqa_bunny")
    questions = [({chr(65 + i): c for i, c in enumerate(choices)}, chr(65 + answer)) for choices, answer in
                 fix["problems"]]  # fmt: skip
    preds = fix["predictions"]
    assert letter_answers(fix["seed"], questions) == preds and len(preds) >= 300
    metas = [{"choices": choices} for choices, _ in questions]
    parsed = [sc.parse_scienceqa(p, m) for p, m in zip(preds, metas, strict=True)]
    assert [p or "FAILED" for p in parsed] == [fix["expected"]["parsed"][str(i)] for i in range(len(preds))]
    correct = [i for i, (p, (_, a)) in enumerate(zip(parsed, questions, strict=True)) if p == a]
    assert correct == fix["expected"]["correct_ids"]
    ours = sc.scienceqa_scores(preds, [a for _, a in questions], metas)
    assert ours["accuracy"]["value"] == pytest.approx(fix["expected"]["accuracy"], abs=1e-9)
