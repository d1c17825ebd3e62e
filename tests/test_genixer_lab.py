"""The Genixer lab's pieces: the world's truth for generated samples, AUROC, equal-size arms, the foundation box
scorer, the judge's lessons and the pool's deduplication."""

from __future__ import annotations

import random

import pytest
import torch

from vlmforge.data.records import load_records, save_records
from vlmforge.shapes.lab.genixer_data import (
    build_pool,
    judge_lessons,
    labeled_fraction,
    scene_records,
    truths,
    world_with_grounding,
)
from vlmforge.shapes.lab.genixer_metrics import auroc, band_of, mean_se, task_table
from vlmforge.shapes.lab.genixer_students import arm_data
from vlmforge.shapes.lab.genixer_truth import record_pairs
from vlmforge.shapes.world import WorldConfig


@pytest.fixture(scope="module")
def lab_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("genixer_lab")
    world = world_with_grounding(WorldConfig(test_size=4), root / "world", seed=0, train_size=24)
    data = root / "data"
    data.mkdir()
    labeled = labeled_fraction(world, 0.5, data)
    return world, data, labeled


def _truth_and_records(world):
    scenes = {s["image"].split("/")[-1]: s for s in scene_records(world)}
    truth = truths(scenes, world)
    return truth, load_records(world.parent / "data" / "L" / "instruct.jsonl")


def test_every_world_record_is_correct_and_wrong_answers_are_not(lab_world):
    world, _, _ = lab_world
    truth, records = _truth_and_records(world)
    assert {r["task"] for r in records} >= {"color", "exist", "mc", "rec", "reg", "pointqa", "qcba", "ref_dialogue"}
    for rec in records:
        scene = truth[rec["image"].split("/")[-1]]
        pairs = record_pairs(rec)
        assert scene.check(pairs), rec["id"]
        q, a = pairs[-1]
        if rec["task"] == "color":
            wrong = next(c for c in ("red", "green", "blue") if c != a)
        elif rec["task"] == "mc":
            wrong = next(letter for letter in "ABCD" if letter != a)
        elif rec["task"] in ("rec", "pointqa"):
            wrong = "[0.000,0.000,0.010,0.010]"
        elif rec["task"] == "exist":
            wrong = "No" if a == "Yes" else "Yes"
        else:
            continue
        assert not scene.check([*pairs[:-1], (q, wrong)]), rec["id"]


def test_questions_the_scene_does_not_support_are_not_correct(lab_world):
    world, _, _ = lab_world
    truth, _ = _truth_and_records(world)
    scene = next(iter(truth.values()))
    assert not scene.check([("What colour is the unicorn?", "red")])
    assert not scene.check([("What is in the region [0.000,0.000,0.001,0.001]?", "small red circle")])
    assert not scene.check([])
    obj, box = scene.objects[0], scene.object_boxes[0]
    region = "[" + ",".join(f"{v:.3f}" for v in box) + "]"
    full = f"{obj.size} {obj.color} {obj.shape}"
    assert scene.check([(f"What is in the region {region}?", full), ("What colour is it?", obj.color)])
    other = next(c for c in ("red", "green") if c != obj.color)
    assert not scene.check([(f"What is in the region {region}?", full), ("What colour is it?", other)])


def test_auroc_matches_hand_counts_and_ties_count_half():
    # Pairs (correct, wrong): 0.9>0.1, 0.9>0.5, 0.4>0.1, 0.4<0.5 -> 3 of 4.
    assert auroc([0.9, 0.4, 0.1, 0.5], [True, True, False, False]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [True, False]) == pytest.approx(0.5)
    assert auroc([0.2, 0.8], [True, True]) is None
    assert band_of(0.5) == "medium" and band_of(0.7) == "high" and band_of(1.0) == "high" and band_of(0.0) == "low"
    stats = mean_se([1.0, 2.0, 3.0])
    assert stats["mean"] == 2.0 and stats["se"] == pytest.approx((1 / 3) ** 0.5)


def test_task_table_counts_rejections_correctness_and_box_filter():
    asked = {"rec": {"accepted": 3, "rejected:no_box": 1}}
    judged = [{"id": str(i), "score": s, "correct": c, "provenance": {"asked_task": "rec"}}
              for i, (s, c) in enumerate([(0.9, True), (0.6, False), (0.2, False)])]  # fmt: skip
    row = task_table(asked, judged, kept_ids={"0", "2"})["rec"]
    assert row["rejection_rate"] == pytest.approx(0.25) and row["correct"] == pytest.approx(1 / 3)
    assert row["auroc"] == 1.0 and row["bands"]["medium"] == {"n": 1, "correct": 0.0}
    assert row["box_filter"]["precision_after"] == 0.5 and row["box_filter"]["retention"] == pytest.approx(2 / 3)


def test_band_arms_and_their_random_control_have_equal_size(lab_world, tmp_path):
    _, data, _ = lab_world
    rng = random.Random(0)
    scores = [0.1] * 7 + [0.6] * 3 + [0.9] * 12
    synthetic = [{"id": f"s{i}", "image": "pool/x.png", "task": "common_vqa", "score": s, "correct": rng.random() < s,
                  "conversations": [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]}
                 for i, s in enumerate(scores)]  # fmt: skip
    paths = {name: tmp_path / f"{name}.jsonl" for name in ("all", "filtered", "correct")}
    save_records(synthetic, paths["all"])
    save_records(synthetic[:5], paths["filtered"])
    save_records([r for r in synthetic if r["correct"]], paths["correct"])
    arms = arm_data(tmp_path / "arms", {"paths": paths}, data / "L" / "instruct.jsonl")
    assert [arms[a]["synthetic"] for a in ("low", "medium", "high", "random")] == [3, 3, 3, 3]
    assert arms["all"]["synthetic"] == len(scores) and arms["L"]["synthetic"] == 0
    medium = [r for r in load_records(arms["medium"]["path"]) if r["provenance"].get("source") == "synthetic"]
    assert {r["score"] for r in medium} == {0.6}
    # Students train on the tasks the test asks: L's grounding-only records are left out.
    assert {r["task"] for r in load_records(arms["L"]["path"])} <= {"color", "shape", "count", "position", "exist",
                                                                     "mc", "rec"}  # fmt: skip


def test_judge_lessons_say_yes_to_truth_and_no_to_wrong_answers(lab_world, tmp_path):
    world, data, _ = lab_world
    n = judge_lessons(data / "L" / "instruct.jsonl", world, tmp_path / "lessons.jsonl")
    lessons = load_records(tmp_path / "lessons.jsonl")
    answers = [r["conversations"][1]["value"] for r in lessons]
    assert n == len(lessons) and 0 < answers.count("No") <= answers.count("Yes")
    assert all("Please answer this question with Yes or No." in r["conversations"][0]["value"] for r in lessons)
    assert all(r["image"].startswith("labeled/") for r in lessons)


def test_pool_drops_scenes_the_labeled_world_holds(lab_world, tmp_path):
    world, _, _ = lab_world
    same = build_pool(world, world, tmp_path / "same")
    assert same["scenes"] == {} and same["duplicates_dropped"] == 24
    other_world = world_with_grounding(WorldConfig(test_size=4), tmp_path / "other", seed=1, train_size=24)
    other = build_pool(world, other_world, tmp_path / "other_data")
    assert len(other["scenes"]) + other["duplicates_dropped"] == 24 and len(other["scenes"]) > 0
    assert sorted(p.name for p in (tmp_path / "other_data" / "pool").iterdir()) == sorted(other["scenes"])


def test_foundation_scorer_is_the_cosine_of_tower_and_text_embeddings(tmp_path, text_model):
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from vlmforge.shapes.foundation.vision import embed_texts
    from vlmforge.shapes.lab.genixer_scorer import FoundationScorer

    torch.manual_seed(0)
    config = CLIPVisionConfig(image_size=16, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                              num_attention_heads=2, projection_dim=384)  # fmt: skip
    CLIPVisionModelWithProjection(config).save_pretrained(tmp_path / "vision")
    CLIPImageProcessor(size={"height": 16, "width": 16}, do_center_crop=False).save_pretrained(tmp_path / "vision")
    scorer = FoundationScorer(tmp_path / "vision", text_model=text_model)
    crops = [Image.new("RGB", (9, 7), c) for c in ("red", "blue", "green")]
    texts = ["a red circle", "a blue square", "a green star"]
    got = scorer.scores(crops, texts)
    pixels = scorer.processor(images=crops, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        image = torch.nn.functional.normalize(scorer.model(pixel_values=pixels).image_embeds, dim=-1)
    want = torch.nn.functional.cosine_similarity(image, embed_texts(texts, text_model), dim=-1)
    assert got == pytest.approx(want.tolist(), abs=1e-5)
    assert got[:1] == pytest.approx(scorer.scores(crops[:1], texts[:1]), abs=1e-5)  # no batch-mate effect
    assert scorer.scores([], []) == []


def test_lab_recipe_group_is_known():
    from vlmforge.shapes.lab.run import expand_recipes

    assert expand_recipes("bunny,genixer") == ("bunny", "genixer")


def test_claims_are_read_off_the_numbers_with_their_standard_errors():
    from vlmforge.shapes.lab.genixer_report import claims

    def arm(values_per_seed: list[float]) -> dict:
        summary = {t: {"per_seed": values_per_seed, "mean": sum(values_per_seed) / len(values_per_seed),
                       "se": 0.01 if len(values_per_seed) > 1 else None} for t in ("color", "shape", "count",
                       "position", "exist", "mc", "rec")}  # fmt: skip
        return {"runs": [{}] * len(values_per_seed), "summary": summary, "synthetic": 0}

    three = {"arms": {"L": arm([0.50, 0.51, 0.49]), "all": arm([0.60, 0.61, 0.59]), "low": arm([0.5, 0.5, 0.5]),
                      "medium": arm([0.52, 0.5, 0.51]), "high": arm([0.55, 0.56, 0.57]),
                      "all_boxfiltered": arm([0.6, 0.61, 0.59])}}  # fmt: skip
    text = "\n".join(claims(three))
    assert "Synthetic data helps* (L + all vs L, mean accuracy): +0.100" in text and ": holds." in text
    assert "the best band is high" in text and "does not hold (the other way)" in text
    assert "helps REC* (L + box-filtered vs L + all, REC Acc@0.5): +0.000" in text and "within 2 SE" in text
    one = {"arms": {"L": arm([0.5]), "all": arm([0.6])}}
    assert claims(one) == [
        "- *Synthetic data helps* (L + all vs L, mean accuracy): +0.100: not testable with one seed.",
        "- *The medium band is best*: not testable here: a judge band holds no samples, so no equal-size band arms "
        "could be made.",
    ]
    assert not any("not testable here" in line for line in claims(three))


def test_lab_models_start_from_the_default_labs_stage_1_only_when_it_used_these_foundation_models(
    tmp_path, monkeypatch
):
    import json

    from vlmforge.shapes.lab import genixer
    from vlmforge.shapes.lab.config import LabConfig
    from vlmforge.shapes.lab.freshness import INPUTS_JSON
    from vlmforge.shapes.lab.recipe_runs import shipped_recipe
    from vlmforge.train.recipe import load_recipe

    foundation, trained = tmp_path / "foundation", []
    foundation.mkdir()
    (foundation / "manifest.json").write_text(json.dumps({"build_id": "b1"}))
    monkeypatch.setattr(genixer, "_train", lambda config, name, recipe, variables, overrides: trained.append(
        (name, recipe, variables)) or tmp_path / name)  # fmt: skip
    config = LabConfig(out=tmp_path)
    bunny = tmp_path / "runs" / "bunny-seed1"
    (bunny / "pretrain" / "final").mkdir(parents=True)
    (bunny / INPUTS_JSON).write_text(json.dumps({"foundation_build": "b1"}))
    assert genixer._stage1(config, 1, foundation, tmp_path / "world") == bunny / "pretrain" / "final"
    assert trained == []
    (bunny / INPUTS_JSON).write_text(json.dumps({"foundation_build": "other"}))  # another build's Bunny
    assert genixer._stage1(config, 1, foundation, tmp_path / "world") == tmp_path / "genixer-stage1-seed1"
    assert genixer._stage1(config, 2, foundation, tmp_path / "world") == tmp_path / "genixer-stage1-seed2"
    assert [t[1] for t in trained] == ["shapes-genixer-stage1.yaml"] * 2
    # The lab's own stage 1 is a projector-only stage on the world's captions; the models then start from it.
    stage1 = load_recipe(shipped_recipe("shapes-genixer-stage1.yaml"), variables=trained[0][2])
    assert list(stage1.stages) == ["pretrain"] and stage1.stages["pretrain"].data.path.endswith("captions.jsonl")
    student = load_recipe(shipped_recipe("shapes-genixer.yaml"), variables={"stage1": "S1", "records": "r.jsonl",
                                                                              "data": "d"})  # fmt: skip
    assert student.model.init_from == "S1" and list(student.stages) == ["finetune"]


def test_the_report_says_what_a_longer_run_changes_from_this_runs_numbers():
    from vlmforge.shapes.lab.genixer_report import longer_run

    run = {"settings": {"generator_epochs": 1.0}, "overall": {"rejection_rate": 0.411, "correct": 0.219},
           "pool": {"images": 322}, "arms": {"medium": {"synthetic": 103}}}  # fmt: skip
    text = longer_run(run)
    assert "1 epoch(s)" in text and "0.41 of its outputs" in text and "0.22 of the parsed" in text
    assert "held 103 samples from a pool of 322 images" in text
    assert "held 0 samples" in longer_run({**run, "arms": {}})  # no band arms: an empty band
