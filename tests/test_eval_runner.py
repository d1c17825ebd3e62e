"""The runner with fake generators: results layout, resume, sharding, foreign predictions, suite, CLI."""

from __future__ import annotations

import json

import pytest

from eval_helpers import Oracle, shapes_world
from vlmforge.errors import ConfigError, DataError, VlmforgeError
from vlmforge.eval import evaluate
from vlmforge.eval.commands import parse_data
from vlmforge.eval.suite import run_suite


@pytest.fixture
def world(tmp_path):
    return {"world": str(shapes_world(tmp_path / "world", world_json={"chance": {"color": 0.2}}))}


def test_perfect_and_wrong_models_and_output_layout(tmp_path, world):
    oracle = Oracle(["shapes"], world)
    res = evaluate(oracle, ["shapes"], tmp_path / "out", batch_size=3, data=world, model={"name": "oracle"},
                   progress=False)  # fmt: skip
    tasks = res["tasks"]
    assert len(tasks) == 7
    for name, info in tasks.items():
        assert info["metrics"][info["primary"]]["value"] == 1.0, name
    assert tasks["shapes_exist"]["metrics"]["yes_ratio"]["value"] == 0.5
    assert tasks["shapes_color"]["chance"] == 0.2 and tasks["shapes_mc"]["n_questions"] == 2
    assert res["model"]["name"] == "oracle" and "torch" in res["versions"] and res["timestamp"]
    out = tmp_path / "out"
    rows = [json.loads(line) for line in (out / "samples_shapes_mc.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and set(rows[0]) >= {"id", "prompt", "prediction", "parsed", "target", "correct"}
    assert all(r["correct"] == 1.0 for r in rows)
    assert (out / "report.md").read_text().count("## shapes_") == 7
    assert (out / "plot_accuracy.png").stat().st_size > 0
    assert not list(out.glob("*.part*"))

    wrong = evaluate(Oracle(["shapes_color"], world, wrong=True), ["shapes_color"], tmp_path / "w", data=world,
                     progress=False)  # fmt: skip
    assert wrong["tasks"]["shapes_color"]["metrics"]["accuracy"]["value"] == 0.0


def test_resume_after_interruption_generates_only_the_rest(tmp_path, world):
    out = tmp_path / "out"

    class Crashing(Oracle):
        def __call__(self, requests):
            if self.calls >= 2:
                raise KeyboardInterrupt
            return super().__call__(requests)

    with pytest.raises(KeyboardInterrupt):
        evaluate(Crashing(["shapes_mc"], world), ["shapes_mc"], out, batch_size=2, data=world, progress=False)
    # Simulate a write torn by the interruption: a half line at the end of the part file.
    part = out / "samples_shapes_mc.part0.jsonl"
    part.write_text(part.read_text() + '{"id": "m2#r')
    second = Oracle(["shapes_mc"], world)
    res = evaluate(second, ["shapes_mc"], out, batch_size=2, data=world, progress=False)
    assert second.calls == 8 - 2 and res["tasks"]["shapes_mc"]["metrics"]["accuracy"]["value"] == 1.0
    third = Oracle(["shapes_mc"], world)
    evaluate(third, ["shapes_mc"], out, batch_size=2, data=world, progress=False)
    assert third.calls == 0  # everything reused
    assert len((out / "samples_shapes_mc.jsonl").read_text().splitlines()) == 8


def test_sharded_ranks_split_work_and_rank0_merges(tmp_path, world):
    out = tmp_path / "out"
    r1, r0 = Oracle(["shapes_color", "shapes_rec"], world), Oracle(["shapes_color", "shapes_rec"], world)
    assert evaluate(r1, ["shapes_color", "shapes_rec"], out, data=world, shard=(1, 2), progress=False) == {}
    res = evaluate(r0, ["shapes_color", "shapes_rec"], out, data=world, shard=(0, 2), progress=False)
    assert r0.calls == r1.calls == 2 and not set(r0.prompts) & set(r1.prompts)
    assert res["tasks"]["shapes_rec"]["metrics"]["acc@0.5"] == {"value": 1.0, "stderr": 0.0, "n": 2}
    assert [json.loads(x)["id"] for x in (out / "samples_shapes_color.jsonl").read_text().splitlines()] == ["c1", "c2"]


def test_predictions_from_another_task_are_rejected(tmp_path, world):
    out = tmp_path / "out"
    out.mkdir()
    (out / "samples_shapes_color.jsonl").write_text(
        json.dumps({"id": "c1", "prediction": "red"}) + "\n" + json.dumps({"id": "zz9", "prediction": "red"}) + "\n"
    )
    with pytest.raises(DataError, match=r"samples_shapes_color\.jsonl:2.*another task"):
        evaluate(Oracle(["shapes_color"], world), ["shapes_color"], out, data=world, progress=False)


def test_generator_returning_wrong_count_is_an_error(tmp_path, world):
    with pytest.raises(VlmforgeError, match="returned 0 answers"):
        evaluate(lambda reqs: [], ["shapes_color"], tmp_path / "o", data=world, progress=False)


def test_limit_keeps_rotations_together(tmp_path, world):
    o = Oracle(["shapes_mc"], world)
    res = evaluate(o, ["shapes_mc"], tmp_path / "o", data=world, limit=1, progress=False)
    assert o.calls == 4 and res["tasks"]["shapes_mc"]["n_questions"] == 1


def test_suite_compares_models(tmp_path, world):
    spec = tmp_path / "exp.yaml"
    spec.write_text(f"tasks: shapes_color,shapes_exist\ndata: {{world: {world['world']}}}\n"
                    "models:\n  - {name: good, path: m1}\n  - {name: bad, path: m2}\n")  # fmt: skip
    made = []

    def factory(path):
        made.append(path)
        return Oracle(["shapes_color", "shapes_exist"], world, wrong=path.endswith("m2"))

    runs = run_suite(spec, factory=factory, progress=False)
    assert made == [str(tmp_path / "m1"), str(tmp_path / "m2")]
    assert runs["good"]["tasks"]["shapes_color"]["metrics"]["accuracy"]["value"] == 1.0
    assert runs["bad"]["tasks"]["shapes_color"]["metrics"]["accuracy"]["value"] == 0.0
    table = (tmp_path / "exp" / "comparison.md").read_text()
    assert "| good | bad |" in table and (tmp_path / "exp" / "comparison.png").exists()


def test_cli_errors():
    from vlmforge.cli import main

    assert parse_data(["world=/a", "mme=/b=c"]) == {"world": "/a", "mme": "/b=c"}
    with pytest.raises(ConfigError):
        parse_data(["world"])
    assert main(["eval", "--model", "m", "--tasks", "nope", "--out", "o"]) == 1
    assert main(["eval", "--list-tasks"]) == 0
