"""Circular evaluation as VLMEvalKit does it: an MMBench TSV's own circular copies are grouped by index % 1e6 (or
its g_index column), never rotated again; a file whose copies are incomplete stops with the index named. The
scoring modes are chosen per run and recorded in results.json."""

from __future__ import annotations

import json

import pytest

from eval_helpers import parity_fixture, write_vlmevalkit_tsv
from vlmforge.errors import ConfigError, DataError
from vlmforge.eval import evaluate
from vlmforge.eval.tasks import get_task
from vlmforge.eval.types import GenerationRequest


class Replay:
    """A generator answering each prompt with the answer recorded for it."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers

    def __call__(self, requests: list[GenerationRequest]) -> list[str]:
        return [self.answers[r.prompt] for r in requests]


def _mmbench(tmp_path, drop: set[int] = frozenset(), columns=None, rows=None):
    fix = parity_fixture("mmbench_circular")
    keep = [(r, p) for r, p in zip(fix["rows"], fix["predictions"], strict=True) if int(r[0]) not in drop]
    path = write_vlmevalkit_tsv(tmp_path / "MMBench_DEV_EN.tsv", columns or fix["columns"],
                                rows or [r for r, _ in keep])  # fmt: skip
    return fix, path, {str(r[0]): p for r, p in keep}


def test_mmbench_tsv_with_its_copies_gives_the_reference_count_and_accuracy(tmp_path):
    fix, path, answer_of = _mmbench(tmp_path)
    samples = get_task("mmbench_tsv").load({"mmbench_tsv": str(path)})
    replay = Replay({s.prompt: answer_of[s.id] for s in samples})
    res = evaluate(replay, ["mmbench_tsv"], tmp_path / "out", data={"mmbench_tsv": str(path)}, progress=False)
    task = res["tasks"]["mmbench_tsv"]
    assert task["n_samples"] == fix["expected"]["n_rows"] == len(fix["rows"])  # every row asked once, as written
    assert task["n_questions"] == fix["expected"]["n_questions"] == 300  # the reference's grouping
    assert task["metrics"]["accuracy"]["value"] == pytest.approx(fix["expected"]["accuracy"], abs=1e-9)
    assert task["metrics"]["vanilla_accuracy"]["n"] == 300  # the original rows only
    assert task["metrics"]["vanilla_accuracy"]["value"] == pytest.approx(fix["expected"]["vanilla_accuracy"], abs=1e-9)
    assert task["scoring"] == "reference" and res["config"]["scoring"] == "reference"

    robust = evaluate(replay, ["mmbench_tsv"], tmp_path / "out", data={"mmbench_tsv": str(path)}, progress=False,
                      scoring="robust")  # fmt: skip
    assert robust["tasks"]["mmbench_tsv"]["scoring"] == "robust" and robust["config"]["scoring"] == "robust"
    assert "; robust scoring." in (tmp_path / "out" / "report.md").read_text()
    # robust reads more of these answers as letters ("b", "(c)."): the vanilla score rises
    assert robust["tasks"]["mmbench_tsv"]["metrics"]["vanilla_accuracy"]["value"] > task["metrics"][
        "vanilla_accuracy"]["value"]  # fmt: skip


def test_a_missing_rotation_is_an_error_naming_the_index(tmp_path):
    fix, path, _ = _mmbench(tmp_path, drop={2_000_003})
    with pytest.raises(DataError, match=r"question index 3 has \d of its \d circular rows.*missing index 2000003"):
        get_task("mmbench_tsv").load({"mmbench_tsv": str(path)})
    _, path, _ = _mmbench(tmp_path, drop={5})
    with pytest.raises(DataError, match=r"row index 1000005 is a circular copy of question index 5, which the file"):
        get_task("mmbench_tsv").load({"mmbench_tsv": str(path)})


def test_questions_without_copies_are_asked_once_and_g_index_groups(tmp_path):
    fix = parity_fixture("mmbench_circular")
    singles = [r for r in fix["rows"] if int(r[0]) < 1_000_000]
    path = write_vlmevalkit_tsv(tmp_path / "plain.tsv", fix["columns"], singles[:20])
    samples = get_task("mmbench_tsv").load({"mmbench_tsv": str(path)})
    assert len(samples) == 20 and len({s.group_id for s in samples}) == 20  # no rotation of our own
    # VLMEvalKit's `circular` tool numbers copies from 10,000,000 up when the indices pass 1e6, with g_index
    rows = [[*r, "0"] for r in fix["rows"] if int(r[0]) in (0, 1_000_000, 2_000_000, 3_000_000)]
    for row in rows:
        row[0] = str(int(row[0]) * 10)
    path = write_vlmevalkit_tsv(tmp_path / "g.tsv", [*fix["columns"], "g_index"], rows)
    samples = get_task("mmbench_tsv").load({"mmbench_tsv": str(path)})
    assert {s.group_id for s in samples} == {"0"} and [s.meta["rotation"] for s in samples] == [0, 1, 2, 3]


def test_unknown_scoring_mode_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown scoring 'lenient'"):
        evaluate(Replay({}), ["mmbench_tsv"], tmp_path, data={}, progress=False, scoring="lenient")


def test_cli_scoring_flag(tmp_path, monkeypatch):
    import vlmforge.eval.generator
    from vlmforge.cli import main

    fix, path, answer_of = _mmbench(tmp_path)
    samples = get_task("mmbench_tsv").load({"mmbench_tsv": str(path)})
    monkeypatch.setattr(
        vlmforge.eval.generator, "load_generator", lambda _: Replay({s.prompt: answer_of[s.id] for s in samples})
    )
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    args = ["eval", "--model", str(tmp_path / "model"), "--tasks", "mmbench_tsv", "--data", f"mmbench_tsv={path}",
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert main([*args, "--scoring", "robust"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["config"]["scoring"] == results["tasks"]["mmbench_tsv"]["scoring"] == "robust"
    with pytest.raises(SystemExit):
        main([*args, "--scoring", "lenient"])
