"""The lab's Unicorn comparison on a tiny world: shared stores, four recipes on the same test images, the
modality gap, and statements that follow the numbers."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from test_foundation import BUILD_SPEC
from vlmforge.data.embedding_store import EmbeddingStore
from vlmforge.errors import ConfigError
from vlmforge.shapes.lab.config import LabConfig
from vlmforge.shapes.lab.recipe_runs import LAB_TASKS
from vlmforge.shapes.lab.run import expand_recipes, run_lab
from vlmforge.shapes.lab.transfer_probe import ATTRIBUTES
from vlmforge.shapes.lab.unicorn import CONTROL, METHODS, RECIPE_NAMES, unicorn_statements
from vlmforge.shapes.lab.unicorn_aligned import ALIGNED

TINY_TRAINING = (
    "stages.pretrain.max_steps=1", "stages.finetune.max_steps=1", "stages.pretrain.global_batch_size=8",
    "stages.pretrain.per_device_batch_size=8", "stages.finetune.global_batch_size=8",
    "stages.finetune.per_device_batch_size=8", "model.num_visual_tokens=2",
)  # fmt: skip


def tiny_foundation_overrides() -> dict:
    spec = asdict(BUILD_SPEC)  # test_foundation's tiny models; the lab's vocabulary keeps samples under max_length
    return {
        "vocab_size": 1024,
        "holdout": spec["holdout"],
        **{f"{part}.{k}": v for part in ("lm", "vision", "reader") for k, v in spec[part].items()},
    }


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    config = LabConfig(
        out=out, seeds=(0,), recipes=expand_recipes("unicorn"), train_images=40, test_images=8,
        foundation_overrides=tiny_foundation_overrides(), recipe_overrides=TINY_TRAINING, eval_batch_size=32,
        eval_max_new_tokens=4,
    )  # fmt: skip
    return out, run_lab(config)


def store_mean_norm(path) -> float:
    rows = EmbeddingStore.open(path).array.astype(np.float64)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return float(np.linalg.norm(rows.mean(0)))


def test_stores_are_prepared_once_per_method_with_the_right_statistics(lab):
    out, results = lab
    raw = EmbeddingStore.open(out / "unicorn" / "text" / "embeddings")
    assert len(raw) == 40 and raw.dim == 384
    norms = {}
    for method in METHODS:
        store_dir = out / "unicorn" / "stores" / method
        assert json.loads((store_dir / "stats.json").read_text())["method"] == method
        assert EmbeddingStore.open(store_dir).ids == raw.ids
        norms[method] = store_mean_norm(store_dir)
        assert results["unicorn"]["store_mean_norm"][method] == pytest.approx(norms[method], abs=1e-3)
    assert norms["none"] > 0.3  # captions of one world share a large common direction...
    assert norms["mean_shift"] < 0.1 * norms["none"]  # ...which the mean shift removes (renormalised: ~0)
    assert norms["c3"] < 0.5 * norms["none"]
    # the text-only models trained on the stored vectors: the method is recorded in each checkpoint
    for method in METHODS:
        final = results["recipes"][f"unicorn-{method}"]["runs"][0]["model"]
        assert json.loads((out / final / "config.json").read_text())["transfer_method"] == method


def test_every_recipe_is_evaluated_on_the_held_out_test_images(lab):
    out, results = lab
    assert set(results["recipes"]) == {*RECIPE_NAMES, ALIGNED}
    for name in (*RECIPE_NAMES, ALIGNED):
        run = results["recipes"][name]["runs"][0]
        assert set(run["tasks"]) == set(LAB_TASKS)
        samples = (out / "eval" / f"{name}-seed0" / "samples_shapes_color.jsonl").read_text().splitlines()
        assert samples and all(json.loads(s)["id"].startswith("test-") for s in samples)
        config = json.loads((out / run["model"] / "config.json").read_text())
        centred = name in ("unicorn-mean_shift", "unicorn-c3", ALIGNED)
        # calibrated on the 40 train images (never the 8 test images); none and the control stay uncentred
        assert (config.get("image_mean_count") or 0) == (40 if centred else 0), name
    control = json.loads((out / results["recipes"][CONTROL]["runs"][0]["model"] / "config.json").read_text())
    assert control.get("transfer_method") is None  # the control trained on real images, no store
    report = (out / "report.md").read_text()
    assert "Unicorn: text-only vs image-trained control" in report and "stand in for the LLM" in report
    header = next(line for line in report.splitlines() if line.startswith("| question type | unicorn-none"))
    assert header.endswith(f"| unicorn-control | {ALIGNED} | question only |")


def test_the_aligned_row_is_the_mean_shift_models_with_covariance_alignment_only(lab):
    out, results = lab
    shift, aligned = (results["recipes"][n]["runs"][0] for n in ("unicorn-mean_shift", ALIGNED))
    config = json.loads((out / aligned["model"] / "config.json").read_text())
    assert config["image_alignment"] == "covariance" and config["transfer_method"] == "mean_shift"
    assert Path(aligned["model"]).parent == Path(shift["model"]).parent  # the same run, nothing retrained
    assert aligned["train_seconds"] == shift["train_seconds"]
    same = {k: v for k, v in safe_weights(out / shift["model"]).items() if k not in ("image_align",)}
    moved = safe_weights(out / aligned["model"])
    assert "image_align" in moved and all(torch.equal(v, moved[k]) for k, v in same.items())
    gap = results["unicorn"]["modality_gap"]["after"]
    assert ALIGNED in gap and gap[ALIGNED] != gap["mean_shift"]
    assert any(s.startswith("With covariance alignment at test time") for s in results["unicorn"]["statements"])


def safe_weights(model_dir) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def test_modality_gap_is_measured_before_and_after_transfer(lab):
    _, results = lab
    gap = results["unicorn"]["modality_gap"]
    assert gap["pairs"] == 40 and gap["calibration_images"] == 40
    values = [gap["before"], *gap["after"].values()]
    assert all(-1.0 <= v <= 1.0 for v in values)
    assert gap["after"]["none"] == pytest.approx(gap["before"], abs=2e-3)  # none: only normalised on both sides
    assert abs(gap["after"]["mean_shift"] - gap["before"]) > 1e-2  # computed from the transferred vectors
    assert any(str(round(gap["before"], 3)) in s for s in results["unicorn"]["statements"])


def test_the_embedding_probe_scores_every_source_on_the_real_test_images(lab):
    out, results = lab
    probe = results["unicorn"]["probe"]
    assert probe["train"] == 40 and probe["test"] == 8
    assert set(probe["accuracy"]) == {"image", *METHODS}
    for scores in probe["accuracy"].values():
        assert set(scores) == set(probe["majority"]) and all(0.0 <= v <= 1.0 for v in scores.values())
    assert {"count", "colors", "shapes"} <= set(probe["majority"]) <= set(ATTRIBUTES)
    assert "| probe attribute | trained on image |" in (out / "report.md").read_text()
    assert any(
        s.startswith("Linear probe on the pooled vector (40 train vectors") for s in results["unicorn"]["statements"]
    )


def summary(values: dict[str, float], chance: float = 0.2, se: float | None = None) -> dict:
    return {t: {"mean": v, "se": se, "per_seed": [v], "chance": chance, "n": 10} for t, v in values.items()}


def test_statements_follow_the_numbers():
    control = summary({"color": 0.9, "position": 0.8, "rec": 0.21}, chance=0.2)
    good = unicorn_statements({
        "unicorn-mean_shift": summary({"color": 0.88, "position": 0.75, "rec": 0.2}),
        "unicorn-none": summary({"color": 0.5, "position": 0.3, "rec": 0.1}),
        CONTROL: control,
    })  # fmt: skip
    text = " ".join(good)
    assert (
        "reaches >= 90% of the image-trained control on 2 of 2 question types where the control is above chance and the question-only baseline"
        in text
    )
    assert "mean_shift beats none" in text
    assert "does not carry `rec`" in text and "does not carry `color`" not in text
    assert "stand in for the LLM" in good[0]

    bad = " ".join(unicorn_statements({
        "unicorn-mean_shift": summary({"color": 0.5, "position": 0.75, "rec": 0.2}, se=0.01),
        "unicorn-none": summary({"color": 0.6, "position": 0.7, "rec": 0.3}, se=0.01),
        CONTROL: summary({"color": 0.9, "position": 0.8, "rec": 0.9}, chance=0.2),
    }))  # fmt: skip
    assert (
        "on 1 of 3 question types where the control is above chance and the question-only baseline (position); it falls short on color, rec"
        in bad
    )
    assert "mean_shift does not beat none" in bad
    assert "color -0.100 (more than 2 standard errors)" in bad
    assert (
        "does not carry" not in bad
        and "rises more than 0.1 above chance and the question-only baseline on every question type" in bad
    )
    at_chance = " ".join(unicorn_statements({CONTROL: summary({"color": 0.2, "rec": 0.2}, chance=0.2)}))
    assert "undertrained" in at_chance and "does not carry" not in at_chance
    # Far above uniform chance, but no better than answering from the question's wording: not image use.
    by_wording = summary({"count": 0.64}, chance=0.25)
    by_wording["count"]["question_only"] = 0.64
    wording = " ".join(unicorn_statements({"unicorn-mean_shift": summary({"count": 0.64}), CONTROL: by_wording}))
    assert "on 0 of 0 question types" in wording and "undertrained" in wording


def test_a_type_the_control_misses_is_blamed_on_the_vector_only_when_the_probe_agrees():
    control = summary({"count": 0.9, "color": 0.2, "position": 0.12}, chance=0.2)
    probe = {"train": 10, "test": 5, "majority": {"count": 0.3, "objects": 0.5, "positions": 0.5},
             "accuracy": {"image": {"count": 0.99, "objects": 0.9, "positions": 0.52}}}  # fmt: skip
    text = " ".join(unicorn_statements({CONTROL: control}, probe=probe))
    # colour needs colour-shape binding, which the probe reads from the vector: the LM is the limit
    assert "does not learn `color` (0.200, chance 0.200), although the pooled vector carries what it needs" in text
    assert "does not carry `color`" not in text
    assert "does not carry `position`" in text  # positions: 0.52 vs 0.5, not carried


def test_recipe_names_expand_and_unknown_names_are_refused():
    assert expand_recipes("bunny") == ("bunny",)
    assert expand_recipes("bunny,unicorn") == ("bunny", *RECIPE_NAMES)
    assert expand_recipes(["unicorn-c3"]) == ("unicorn-c3",)
    with pytest.raises(ConfigError, match="unknown lab recipe 'llava'"):
        expand_recipes("bunny,llava")
