"""The shapes lab end to end on a tiny world: results.json, report.md and the plot, and reruns reuse work."""

from __future__ import annotations

import json

import pytest

from test_lab_unicorn import TINY_TRAINING, tiny_foundation_overrides
from vlmforge.cli import main
from vlmforge.shapes.lab.blind import question_only_baseline
from vlmforge.shapes.lab.config import LabConfig
from vlmforge.shapes.lab.recipe_runs import LAB_TASKS, PARAPHRASED_TASKS, summarize
from vlmforge.shapes.lab.run import run_lab


def _config(out):
    return LabConfig(
        out=out, seeds=(0, 1), recipes=("bunny",), train_images=40, test_images=8,
        # One start, with a pass mark no reader meets: the report must say the reader missed it.
        foundation_overrides={
            **tiny_foundation_overrides(), "reader.attempts": 1, "reader.pass_marks": {"color": 1.01},
        },
        recipe_overrides=tuple(o for o in TINY_TRAINING if "num_visual_tokens" not in o), eval_batch_size=32,
        eval_max_new_tokens=4,
    )  # fmt: skip


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    return out, run_lab(_config(out))


def test_lab_writes_results_report_and_plot(lab):
    out, results = lab
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["seeds"] == [0, 1]
    # The seeds trained side by side, each in a worker process with a log of its own.
    assert all("[finetune]" in (out / "logs" / f"bunny-seed{s}.log").read_text() for s in (0, 1))
    summary = on_disk["recipes"]["bunny"]["summary"]
    assert set(summary) == {t.removeprefix("shapes_") for t in LAB_TASKS}
    for entry in summary.values():
        assert len(entry["per_seed"]) == 2 and 0.0 <= entry["mean"] <= 1.0
        assert entry["se"] is not None and entry["n"] > 0
    assert summary["exist"]["chance"] == 0.5 and summary["mc"]["chance"] == 0.25**4  # circular
    assert summary["count"]["question_only"] == on_disk["question_only_baseline"]["count"]
    assert summary["mc"]["question_only"] is None  # scored circularly: no exact-match baseline
    paraphrased = on_disk["recipes"]["bunny"]["paraphrased"]  # held-out phrasings, rows of their own
    assert (
        set(paraphrased) == {t.removeprefix("shapes_paraphrased_") for t in PARAPHRASED_TASKS}
        and "rec" not in paraphrased
    )
    assert all(len(e["per_seed"]) == 2 and e["n"] > 0 for e in paraphrased.values())
    assert paraphrased["exist"]["chance"] == 0.5
    report = (out / "report.md").read_text()
    assert "| color |" in report and "accuracy.png" in report and "| question only |" in report
    assert "| paraphrased color |" in report and "| paraphrased exist |" in report
    reading = results["foundation"]["reading_test"]  # the foundation's held-out reading test, carried over
    assert reading and all(0.0 <= v <= 1.0 for v in reading.values())
    assert f"color {reading['color']:.3f}" in report
    assert results["foundation"]["reader_passed"] is False and "missed its pass marks in every attempt" in report
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    # every evaluated sample is a held-out test image
    samples = (out / "eval" / "bunny-seed1" / "samples_shapes_count.jsonl").read_text().splitlines()
    assert samples and all(json.loads(s)["id"].startswith("test-") for s in samples)
    samples = (out / "eval" / "bunny-seed1" / "samples_shapes_paraphrased_count.jsonl").read_text().splitlines()
    assert samples and all(json.loads(s)["id"].startswith("test-") and "-p" in json.loads(s)["id"] for s in samples)


def test_rerun_reuses_world_foundation_and_finished_stages(lab):
    out, _ = lab
    final = out / "runs" / "bunny-seed0" / "finetune" / "final" / "model.safetensors"
    before = final.stat().st_mtime_ns
    again = run_lab(_config(out))
    assert again["foundation"]["reused"] is True
    assert final.stat().st_mtime_ns == before  # the finished stage was not retrained


def test_a_rerun_on_other_foundation_models_sets_the_old_runs_aside_and_trains_again(lab):
    out, _ = lab
    old_final = (out / "runs" / "bunny-seed0" / "finetune" / "final" / "model.safetensors").read_bytes()
    config = _config(out)
    config.seeds = (0,)
    config.foundation_overrides = {**config.foundation_overrides, "reader.lr": 1e-3}  # another foundation LM
    again = run_lab(config)
    assert again["foundation"]["reused"] is False
    aside = sorted((out / "stale").iterdir())
    names = [p.name.rsplit("-", 3)[0] for p in aside]
    assert names == ["bunny-seed0", "bunny-seed0"]  # the run and its evaluation, kept
    kept_run = next(p for p in aside if (p / "finetune").is_dir())
    assert (kept_run / "finetune" / "final" / "model.safetensors").read_bytes() == old_final
    new_final = (out / "runs" / "bunny-seed0" / "finetune" / "final" / "model.safetensors").read_bytes()
    assert new_final != old_final  # trained again on the new foundation, and evaluated again
    assert again["recipes"]["bunny"]["runs"][0]["model"].startswith(str(out / "runs" / "bunny-seed0"))


def test_summary_mean_and_standard_error_over_seeds():
    def run(value):
        return {"tasks": {"shapes_color": {"metrics": {"accuracy": {"value": value, "n": 10}}, "primary": "accuracy",
                                           "chance": 1 / 6}}}  # fmt: skip

    entry = summarize([run(0.5), run(0.7), run(0.9)], {"color": 0.3})["color"]
    assert entry["mean"] == pytest.approx(0.7) and entry["question_only"] == 0.3
    assert entry["se"] == pytest.approx(0.2 / 3**0.5)  # sample sd 0.2 over sqrt(3)
    assert entry["n"] == 10


def test_question_only_baseline_answers_from_the_wording(tmp_path):
    def write(split, rows):
        (tmp_path / split).mkdir()
        lines = [
            json.dumps({"id": f"{split}{i}", "task": task, "answer": answer,
                        "conversations": [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": answer}]})
            for i, (task, q, answer) in enumerate(rows)
        ]  # fmt: skip
        (tmp_path / split / "instruct.jsonl").write_text("\n".join(lines) + "\n")

    write("train", [("count", "How many stars?", "1")] * 3 + [("count", "How many stars?", "2"),
                    ("count", "How many objects?", "3"), ("color", "What colour is the star?", "red"),
                    ("mc", "Which? A. x B. y", "A")])  # fmt: skip
    write("test", [("count", "How many stars?", "1"), ("count", "How many stars?", "2"),
                   ("count", "How many objects?", "3"), ("color", "What colour is the circle?", "red"),
                   ("color", "What colour is the star?", "blue")])  # fmt: skip
    # count: "1" for stars (1 of 2 right), "3" for objects (right) -> 2/3; colour: the unseen question falls back
    # to the type's most frequent answer "red" (right), the seen one answers "red" (wrong) -> 1/2; no mc entry.
    assert question_only_baseline(tmp_path) == pytest.approx({"count": 2 / 3, "color": 0.5})


def test_demo_help_explains_itself(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = capsys.readouterr().out
    assert "--quick" in text and "held-out" in text


def test_the_long_lab_lengthens_the_box_phase_and_foundation_sets_still_win(monkeypatch, tmp_path):
    import vlmforge.shapes.lab.run as lab_run
    from vlmforge.shapes.foundation.build import foundation_spec

    seen = {}

    def record(config):
        seen["config"] = config
        (tmp_path / "report.md").write_text("report")
        return {"timings_seconds": {"total": 1.0}}

    monkeypatch.setattr(lab_run, "run_lab", record)
    main(["demo", "--long", "--out", str(tmp_path), "--foundation-set", "reader.box_fraction=0.3"])
    spec = foundation_spec(seen["config"].foundation_overrides)
    assert (spec.reader.box_steps, spec.reader.mc_fraction) == (4000, 0.625)  # LONG_FOUNDATION
    assert spec.reader.box_fraction == 0.3 and seen["config"].seeds == (0, 1, 2)
    with pytest.raises(SystemExit):
        main(["demo", "--quick", "--long", "--out", str(tmp_path)])


def test_a_later_lab_group_keeps_the_earlier_rows_of_the_same_foundation_build(tmp_path):
    from vlmforge.shapes.lab.run import with_earlier_rows

    def results(recipes, build, **sections):
        return {"world": "W", "foundation": {"build_id": build}, "recipes": recipes, **sections}

    earlier = tmp_path / "results.json"
    earlier.write_text(json.dumps(results({"bunny": {"a": 1}, "genixer-L": {"b": 0}}, "b1", unicorn={"u": 1})))
    now = results({"genixer-L": {"b": 2}}, "b1", genixer={"g": 1})
    merged = with_earlier_rows(now, earlier)
    assert merged["recipes"] == {"bunny": {"a": 1}, "genixer-L": {"b": 2}}  # this run's rows win
    assert merged["unicorn"] == {"u": 1} and merged["genixer"] == {"g": 1}
    # Rows of another build of the foundation models are not reported next to these.
    assert with_earlier_rows(results({"x": {}}, "b2"), earlier)["recipes"] == {"x": {}}
    assert with_earlier_rows(results({"x": {}}, None), earlier)["recipes"] == {"x": {}}
    assert with_earlier_rows(now, tmp_path / "none.json") is now
