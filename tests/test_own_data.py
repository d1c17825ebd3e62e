"""`vlmforge train --data ...` on tiny models and a tiny colour data set: no captions, no eval file, a short
schedule, reruns, resume, bad input, captions, `vlmforge init` and `vlmforge probe`."""

import json
import shutil

import pytest
import yaml

from own_data_helpers import TINY, colour_records
from train_helpers import CrashAfter
from vlmforge.cli import main
from vlmforge.errors import DataError, StaleOutputError
from vlmforge.owndata.run import OwnDataJob, run_own_data


def _job(data, parts, out, *extra, **options):
    vision, lm = parts
    return OwnDataJob(data=data, image_folder=None, vision=str(vision), lm=str(lm), out=out,
                      overrides=[*TINY, *extra], **options)  # fmt: skip


@pytest.fixture(scope="module")
def own_run(tmp_path_factory, tiny_parts):
    """One run of the command on records without captions and without an eval file, and what it printed."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("own")
    data = colour_records(root / "data")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        summary = run_own_data(_job(data, tiny_parts, root / "out"))
    return data, root / "out", summary, printed.getvalue()


def test_without_captions_stage1_trains_the_projector_on_the_conversations(own_run):
    _, out, summary, printed = own_run
    assert "no captions in the records" in printed and summary["stage1"] == "conversations"
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    pretrain = recipe["stages"]["pretrain"]
    assert (pretrain["kind"], pretrain["tune"]) == ("finetune", "projector")
    assert pretrain["data"]["path"] == str(out / "data" / "train.jsonl")
    assert not (out / "data" / "stage1.jsonl").exists()


def test_without_an_eval_file_images_are_held_out_and_scored_per_kind(own_run):
    _, out, summary, printed = own_run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["split"] == {"by": "image", "seed": 0, "fraction": 0.25, "train_records": 24,
                                 "heldout_records": 8, "heldout_images": 4}  # fmt: skip
    train = [json.loads(line) for line in (out / "data" / "train.jsonl").read_text().splitlines()]
    held = [json.loads(line) for line in (out / "data" / "heldout.jsonl").read_text().splitlines()]
    assert not {r["image"] for r in train} & {r["image"] for r in held}
    results = json.loads((out / "eval" / "results.json").read_text())["tasks"]["jsonl"]["metrics"]
    for kind in ("colour", "coin"):
        assert manifest["heldout_accuracy"][kind] == results[f"kind={kind}/accuracy"]["value"]
    ceiling = manifest["readout_ceiling"]
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    layers = recipe["model"]["vision_feature_layer"]
    assert layers == [-3, -2] and ceiling["field"] == "kind" and ceiling["features"]["layer"] == layers
    assert ceiling["kinds"]["colour"]["probe_accuracy"] == 1.0  # flat colours: trivially readable
    assert ceiling["kinds"]["colour"]["ratio"] == manifest["heldout_accuracy"]["colour"]
    assert "| colour |" in printed and "probe ceiling" in printed


def test_a_short_schedule_is_sized_in_steps_and_warned_about(own_run):
    _, out, summary, printed = own_run
    assert summary["schedule"]["finetune"] == {"records": 24, "global_batch_size": 4, "steps": 6,
                                               "rule": "1 epochs, at least 3"}  # fmt: skip
    assert "[finetune] warning: only 6 optimizer steps (24 records, global batch 4" in printed
    assert json.loads((out / "finetune" / "manifest.json").read_text())["counts"]["steps"] == 6


def test_a_rerun_reuses_the_same_work_and_names_a_changed_setting(own_run, tiny_parts, capsys):
    data, out, summary, _ = own_run
    again = run_own_data(_job(data, tiny_parts, out))
    assert "reused (same recipe and inputs)" in capsys.readouterr().out
    assert again["heldout_accuracy"] == summary["heldout_accuracy"]
    with pytest.raises(StaleOutputError, match=r"stages.finetune.learning_rate: 0.001 -> 0.002"):
        run_own_data(_job(data, tiny_parts, out, "stages.finetune.learning_rate=2e-3"))
    with pytest.raises(StaleOutputError, match=r"own_data.split_seed: 0 -> 1.*--force"):
        run_own_data(_job(data, tiny_parts, out, "own_data.split_seed=1"))


def test_an_interrupted_run_resumes_without_repeating_steps(own_run, tiny_parts, tmp_path):
    data, _, _, _ = own_run
    job = _job(data, tiny_parts, tmp_path / "out")
    with pytest.raises(KeyboardInterrupt):
        run_own_data(job, callbacks=[CrashAfter(3)])  # in stage 1, after its checkpoint-2
    job.resume = True
    run_own_data(job)
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "out" / "pretrain" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps[:-1] == list(range(1, 7))  # no step logged twice (the last line is the summary)
    assert (tmp_path / "out" / "manifest.json").exists()


def test_bad_input_names_the_file_and_line_and_can_be_skipped_and_counted(own_run, tiny_parts, tmp_path):
    data, _, _, _ = own_run
    folder = tmp_path / "data"
    shutil.copytree(data.parent, folder)
    lines = (folder / "train.jsonl").read_text().splitlines()
    lines[2] = "{not json"
    lines[4] = lines[4].replace('"2.png"', '"missing.png"')
    lines[6] = json.dumps({"id": "bare", "image": "3.png"})
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"train.jsonl:3: malformed JSON"):
        run_own_data(_job(folder / "train.jsonl", tiny_parts, tmp_path / "a"))
    assert not (tmp_path / "a" / "data").exists()  # nothing written before the records are known good
    summary = run_own_data(_job(folder / "train.jsonl", tiny_parts, tmp_path / "b", "on_error=skip",
                                "own_data.probe=false"))  # fmt: skip
    rejected = json.loads((tmp_path / "b" / "manifest.json").read_text())["rejections"]
    assert rejected["by_reason"] == {"bad_conversation": 1, "malformed_json": 1, "missing_image": 1}
    assert rejected["examples"]["missing_image"] == [f"{folder / 'train.jsonl'}:5"]
    assert summary["split"]["train_records"] + summary["split"]["heldout_records"] == 29


def test_captions_train_stage1_and_init_writes_the_template(tiny_parts, tmp_path, capsys):
    data = colour_records(tmp_path / "data", images=8, captions=True)
    assert main(["init", str(tmp_path / "mine.yaml")]) == 0
    assert main(["init", str(tmp_path / "mine.yaml")]) == 1  # never overwritten silently
    vision, lm = tiny_parts
    args = ["train", "--data", str(data), "--vision", str(vision), "--lm", str(lm), "--out", str(tmp_path / "out"),
            "--template", str(tmp_path / "mine.yaml"), "--set", "own_data.probe=false"]  # fmt: skip
    assert main([*args, *(a for item in TINY for a in ("--set", item))]) == 0
    printed = capsys.readouterr().out
    assert "no captions" not in printed
    captions = [json.loads(line) for line in (tmp_path / "out" / "data" / "stage1.jsonl").read_text().splitlines()]
    assert len(captions) == 6 and captions[0]["conversations"][1]["value"].startswith("a ")  # the 6 training images
    assert yaml.safe_load((tmp_path / "out" / "recipe.yaml").read_text())["stages"]["pretrain"]["kind"] == "pretrain"
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "x")]) == 1
    assert "needs --vision, --lm" in capsys.readouterr().err


def test_probe_command_reports_the_ceiling_per_kind(own_run, tiny_parts, tmp_path, capsys):
    data, out, _, _ = own_run
    args = ["probe", "--data", str(data), "--vision", str(tiny_parts[0]), "--heldout-fraction", "0.25"]
    assert main([*args, "--results", str(out / "eval" / "results.json"), "--out", str(tmp_path / "p")]) == 0
    printed = capsys.readouterr().out
    assert "| colour |" in printed and "| coin |" in printed and "linear probe per kind" in printed
    result = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert result["kinds"]["colour"]["probe_accuracy"] == 1.0 and "vlm_accuracy" in result["kinds"]["colour"]
    assert main([*args, "--group-by", "id"]) == 0  # one record per id: nothing to generalise from
    assert "probe does not apply to id=" in capsys.readouterr().out


@pytest.mark.parametrize("strategy", ["full", "default"])
def test_probe_features_are_the_tokens_llava_feeds_its_projector(tiny_parts, strategy):
    """Several vision layers are concatenated per token, in LLaVA's order, with LLaVA's token selection."""
    import torch
    from transformers import AutoModel

    from vlmforge.eval.vision_features import selected_tokens
    from vlmforge.models.assemble import AssemblySpec, assemble_llava

    vision, lm = tiny_parts
    layers = [-1, -3]
    model, _ = assemble_llava(AssemblySpec(str(vision), str(lm), vision_feature_layer=layers,
                                           vision_feature_select_strategy=strategy))  # fmt: skip
    fed = []
    model.model.multi_modal_projector.register_forward_hook(lambda module, args, out: fed.append(args[0]))
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        model.model.get_image_features(pixel_values=pixels)
        tower = AutoModel.from_pretrained(vision).eval()
        hidden_states = tower(pixel_values=pixels, output_hidden_states=True).hidden_states
    probed = selected_tokens(hidden_states, layers, strategy)
    assert probed.shape[-1] == 2 * tower.config.hidden_size
    torch.testing.assert_close(probed, fed[0].reshape(probed.shape))
    assert not torch.allclose(probed, selected_tokens(hidden_states, layers[::-1], strategy))


def test_probe_command_takes_several_layers(own_run, tiny_parts, tmp_path, capsys):
    data, _, _, _ = own_run
    args = ["probe", "--data", str(data), "--vision", str(tiny_parts[0]), "--heldout-fraction", "0.25"]
    assert main([*args, "--layer=-1,-2", "--out", str(tmp_path / "p")]) == 0
    assert "layer [-1, -2]" in capsys.readouterr().out
    result = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert result["features"]["layer"] == [-1, -2] and result["kinds"]["colour"]["probe_accuracy"] == 1.0
    assert len(list((tmp_path / "p" / "cache").glob("features-*.safetensors"))) == 1
    assert main([*args, "--layer=-2", "--out", str(tmp_path / "p")]) == 0  # another layer: its own cache entry
    assert len(list((tmp_path / "p" / "cache").glob("features-*.safetensors"))) == 2
    with pytest.raises(SystemExit):
        main([*args, "--layer=last"])
    assert "expected a layer index" in capsys.readouterr().err


def test_probe_refuses_a_layer_the_tower_lacks(own_run, tiny_parts, capsys):
    data, _, _, _ = own_run
    args = ["probe", "--data", str(data), "--vision", str(tiny_parts[0]), "--heldout-fraction", "0.25"]
    assert main([*args, "--layer=-2,-9"]) == 1
    assert "from -3 to 2" in capsys.readouterr().err
