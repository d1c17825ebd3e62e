"""Batching modes: the recipe key, the length-grouped order (seeded, recorded, resumable), the cost model and
auto's choice."""

import json
import random

import pytest
import torch
import yaml

from train_helpers import CrashAfter, finetune_only_recipe, tiny_data, write_yaml  # noqa: F401
from vlmforge.data.length_grouping import LengthGroupedSampler, length_grouped_order, recorded_orders
from vlmforge.data.packing import BatchPackingCollator
from vlmforge.errors import ConfigError
from vlmforge.train.batching import layout_cost, packed_batch, padded_batch, plan_batching, predict
from vlmforge.train.flops import FlopModel, batch_flops, flop_model, segment_lengths
from vlmforge.train.recipe import load_recipe, recipe_from_dict
from vlmforge.train.stage import run_recipe

# The lab LM's proportions: attention per pair is small next to the linear work per token, as in real models.
FLOPS = FlopModel(per_token=6 * 1.2e6, per_pair=12 * 128 * 4, per_image=1e7)


def _recipe(**stage):
    return {"model": {"language_model": "lm"}, "stages": {"finetune": {"data": {"path": "d.jsonl"}, **stage}}}


def test_batching_defaults_to_auto_and_takes_overrides():
    assert recipe_from_dict(_recipe()).stages["finetune"].batching == "auto"
    recipe = recipe_from_dict(_recipe(), ["stages.finetune.batching=length_grouped"])
    assert recipe.stages["finetune"].batching == "length_grouped"
    with pytest.raises(ConfigError, match="batching must be one of auto, padding, length_grouped, packing"):
        recipe_from_dict(_recipe(batching="sorted"))


def test_packing_key_is_a_deprecated_alias():
    with pytest.warns(FutureWarning, match="stages.finetune.packing is deprecated"):
        assert recipe_from_dict(_recipe(packing=True)).stages["finetune"].batching == "packing"
    with pytest.warns(FutureWarning):
        assert recipe_from_dict(_recipe(), ["stages.finetune.packing=false"]).stages["finetune"].batching == "padding"
    with pytest.raises(ConfigError, match="contradicts batching: length_grouped"):
        recipe_from_dict(_recipe(packing=True, batching="length_grouped"))


def test_length_grouped_order_is_seeded_grouped_and_shuffled_between_buckets():
    lengths = [random.Random(i).choice([20, 30, 200, 400]) + i % 7 for i in range(400)]
    order = length_grouped_order(lengths, 8, seed=1)
    assert sorted(order) == list(range(400))
    assert order == length_grouped_order(lengths, 8, seed=1) != length_grouped_order(lengths, 8, seed=1, epoch=1)
    buckets = [[lengths[i] for i in order[s : s + 8]] for s in range(0, 400, 8)]
    shuffled = [random.Random(0).sample(lengths, 400)[s : s + 8] for s in range(0, 400, 8)]

    def padding(batches):
        return sum(len(b) * max(b) for b in batches) - sum(map(sum, batches))

    assert padding(buckets) < padding(shuffled) / 4
    # Buckets are not in length order: the long and the short ones alternate irregularly.
    maxima = [max(b) for b in buckets]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)


def test_sampler_records_each_epoch_and_refuses_another_order(tmp_path):
    record = tmp_path / "order.jsonl"
    sampler = LengthGroupedSampler([5, 9, 1, 7, 3, 8], bucket=2, seed=0, record=record)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert recorded_orders(record) == {0: first, 1: second}
    assert list(LengthGroupedSampler([5, 9, 1, 7, 3, 8], bucket=2, seed=0, record=record)) == first  # resumed
    with pytest.raises(ConfigError, match="another sample order"):
        list(LengthGroupedSampler([5, 9, 1, 7, 3, 9, 4], bucket=2, seed=0, record=record))


def test_cost_model_counts_attention_as_the_implementation_does():
    rng = random.Random(0)
    mixed = [rng.choice([rng.randint(30, 70), rng.randint(300, 450)]) for _ in range(512)]
    dense, varlen = predict(mixed, 16, FLOPS, "dense"), predict(mixed, 16, FLOPS, "varlen")
    assert dense["padding"].real_token_fraction < 0.6 < 0.8 < dense["length_grouped"].real_token_fraction
    assert dense["packing"].real_token_fraction > dense["padding"].real_token_fraction + 0.2
    assert dense["packing"].row_length % 64 == 0 and dense["packing"].row_length >= max(mixed)
    # Without a kernel that skips the blocks between samples, a packed row pays its length squared.
    assert varlen["packing"].cost_per_sample < dense["packing"].cost_per_sample
    assert varlen["packing"].row_length >= dense["packing"].row_length


def test_auto_picks_the_cheapest_and_keeps_padding_for_even_lengths():
    rng = random.Random(1)
    mixed = [rng.choice([rng.randint(30, 70), rng.randint(300, 450)]) for _ in range(512)]
    plan = plan_batching("auto", mixed, 16, FLOPS, "sdpa")
    assert plan.mode in ("length_grouped", "packing")
    assert plan.predictions[plan.mode].cost_per_sample == min(p.cost_per_sample for p in plan.predictions.values())
    even = [rng.randint(300, 310) for _ in range(512)]
    assert plan_batching("auto", even, 16, FLOPS, "sdpa").mode == "padding"
    # No two even samples pay to share a row: packing lays every batch out as padding does, at padding's cost.
    predicted = predict(even, 16, FLOPS, "dense")
    assert predicted["packing"].cost_per_sample == predicted["padding"].cost_per_sample
    forced = plan_batching("packing", even, 16, FLOPS, "sdpa")
    assert forced.mode == "packing" and forced.requested == "packing"
    manifest = plan.manifest()
    assert manifest["mode"] == plan.mode and 0 < manifest["predicted_real_token_fraction"] <= 1
    assert plan.mode in plan.log_line("finetune") and "auto" in plan.log_line("finetune")


def test_length_grouped_stage_resumes_the_same_order(tmp_path, tiny_data, tiny_parts):  # noqa: F811
    recipe = finetune_only_recipe(tmp_path / "run", tiny_data, tiny_parts, batching="length_grouped", epochs=2)
    recipe["stages"]["finetune"]["data"]["max_samples"] = 8
    recipe["stages"]["finetune"]["save_steps"] = 2
    recipe = load_recipe(write_yaml(tmp_path / "r.yaml", recipe))
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, callbacks=[CrashAfter(3)])  # checkpoint-2 exists, step 3 is lost
    run_recipe(recipe, resume=True)
    stage = tmp_path / "run" / "finetune"
    orders = recorded_orders(stage / "length_grouped_order.jsonl")
    steps = [json.loads(line) for line in (stage / "data_order.jsonl").read_text().splitlines()]
    # What the resumed run trained on is the recorded order, epoch after epoch: nothing twice, nothing lost.
    assert [i for s in steps for i in s["ids"]] == orders[0] + orders[1]
    assert sorted(orders[0]) == sorted(orders[1]) == list(range(8)) and orders[0] != orders[1]
    manifest = json.loads((stage / "manifest.json").read_text())
    assert manifest["batching"]["mode"] == "length_grouped"
    speed = manifest["speed"]
    assert speed["real_tokens_per_s"] > 0 and speed["model_flops_per_s"] > 0 and 0 < speed["fraction_of_peak"] < 1.5
    assert yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())["stages"]["finetune"]["batching"] == (
        "length_grouped"
    )


def _collated_rows(batch, pad):
    """Each row's sample lengths, read back from a collated batch (the trailing padding segment left out)."""
    if "attention_mask" in batch:
        return [[int(n)] for n in batch["attention_mask"].sum(1)]
    rows = []
    for ids, positions in zip(batch["input_ids"], batch["position_ids"], strict=True):
        segments = segment_lengths(positions[None])
        starts = [sum(segments[:k]) for k in range(len(segments))]
        rows.append([n for n, at in zip(segments, starts, strict=True) if (ids[at : at + n] != pad).any()])
    return rows


@pytest.mark.parametrize("attention", ["dense", "varlen"])
def test_the_simulation_lays_out_batches_as_the_collator_does(attention):
    rng = random.Random(3)
    # Batches of even lengths (no merge pays under dense attention) and of short and long samples mixed.
    lengths = [rng.randint(250, 300) if start % 32 else rng.choice([rng.randint(5, 60), rng.randint(150, 300)])
               for start in range(0, 640, 16) for _ in range(16)]  # fmt: skip
    cost, pad = layout_cost(FLOPS, attention), 0
    packed = 0
    for row_length in (320, 640):
        collate = BatchPackingCollator(pad, row_length, cost)
        for start in range(0, len(lengths), 16):
            batch = lengths[start : start + 16]
            collated = collate([{"input_ids": torch.arange(1, n + 1), "labels": torch.arange(n)} for n in batch])
            rows = _collated_rows(collated, pad)
            assert sorted(n for row in rows for n in row) == sorted(batch)
            assert cost.of(rows) == packed_batch(batch, row_length, cost)
            assert collated["input_ids"].numel() == packed_batch(batch, row_length, cost)[0]
            assert packed_batch(batch, row_length, cost)[1] <= padded_batch(batch, cost)[1]
            packed += "attention_mask" not in collated
    # Rows of 640 fit two even samples: that pays where attention skips the blocks between them, never where it
    # scores the whole row; the mixed batches pack either way.
    if attention == "dense":
        assert packed == 40  # the 20 mixed batches at both row lengths, no even one
    else:
        assert packed > 40


def test_the_flop_count_charges_the_head_only_where_it_runs(tiny_llava):
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava)
    flops = flop_model(model)
    body = sum(p.numel() for p in model.model.language_model.parameters())
    body -= model.model.language_model.get_input_embeddings().weight.numel()
    assert flops.per_token == 6.0 * body and flops.per_head == 6.0 * model.lm_head.weight.numel()
    batch = {"input_ids": torch.zeros(2, 10, dtype=torch.long), "attention_mask": torch.ones(2, 10)}
    every = batch_flops(flops, batch)
    assert every - batch_flops(flops, batch, head_positions=3) == pytest.approx(flops.per_head * 17)
