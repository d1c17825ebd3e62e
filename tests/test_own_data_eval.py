"""The own-data command's held-out evaluation follows the recipe's ``on_error``: a held-out question too long for
the model's context stops the report naming it, or with ``--set on_error=skip`` is left out and counted. Training is
replaced by a finished tiny model, since only the evaluation is under test."""

import json

import pytest

from own_data_helpers import TINY, colour_records
from serve_support import chatty_llava, vlm  # noqa: F401  (fixtures: a tiny LLaVA with varied answers, loaded)
from vlmforge.errors import DataError
from vlmforge.owndata import run
from vlmforge.owndata.run import OwnDataJob, run_own_data


@pytest.fixture
def held_out(tmp_path, vlm):  # noqa: F811
    """Training records and a held-out file whose second question is longer than the model's context."""
    data = colour_records(tmp_path / "data", images=4)
    long = "What colour is it? " + "red " * vlm.context
    rows = [
        {"id": f"h{i}", "image": "0.png", "kind": "colour",
         "conversations": [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": "red"}]}
        for i, q in enumerate(["What colour is it?", long, "What colour is it?"], 1)
    ]  # fmt: skip
    heldout = tmp_path / "data" / "heldout.jsonl"
    heldout.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data, heldout


def _job(data, heldout, parts, out, *extra) -> OwnDataJob:
    return OwnDataJob(data=data, image_folder=None, vision=str(parts[0]), lm=str(parts[1]), out=out,
                      eval_data=heldout, overrides=[*TINY, "own_data.probe=false", *extra])  # fmt: skip


def test_a_too_long_held_out_question_follows_on_error(
    held_out,
    tiny_parts,
    chatty_llava,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    monkeypatch.setattr(run, "run_recipe", lambda recipe, **kwargs: chatty_llava)  # the "trained" model
    data, heldout = held_out
    with pytest.raises(DataError, match=r"heldout.jsonl:2: task jsonl, question h2: .*no room for an answer"):
        run_own_data(_job(data, heldout, tiny_parts, tmp_path / "raise"))
    assert not (tmp_path / "raise" / "manifest.json").exists()

    summary = run_own_data(_job(data, heldout, tiny_parts, tmp_path / "skip", "on_error=skip"))
    results = json.loads((tmp_path / "skip" / "eval" / "results.json").read_text())
    task = results["tasks"]["jsonl"]
    assert results["config"]["on_error"] == "skip"
    assert task["rejections"]["by_reason"] == {"too_long": 1} and task["n_samples"] == 2
    assert task["metrics"]["kind=colour/accuracy"]["n"] == 2  # the per-kind report counts the two that fit
    assert summary["heldout_rejections"] == task["rejections"]
    manifest = json.loads((tmp_path / "skip" / "manifest.json").read_text())
    assert manifest["heldout_rejections"]["total"] == 1
    assert "1 held-out question(s) skipped and left out of the accuracy (too_long: 1)" in capsys.readouterr().out
